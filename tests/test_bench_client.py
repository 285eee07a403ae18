"""Tests of the serving benchmark's I/O parts: the streaming client against a fake SGLang
``/generate`` server, and the server process handling (start-up failure, process-group stop).
No timed assertions; nothing needs SGLang."""

import asyncio
import json
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serving import client, server  # noqa: E402


# ---------------------------------------------------------------- streaming client
def test_apply_chunk_tracks_ttft_text_and_passes():
    r = client.RequestResult(0)
    client.apply_chunk(r, {"text": "", "meta_info": {"completion_tokens": 0}}, 10.0, 10.5)
    assert r.ttft is None
    client.apply_chunk(r, {"text": "ab", "meta_info": {"completion_tokens": 3, "prompt_tokens": 7}}, 10.0, 11.0)
    client.apply_chunk(r, {"text": "abcd", "meta_info": {"completion_tokens": 6, "mtp_forward_passes": 2,
                                                          "finish_reason": {"type": "length"}}}, 10.0, 12.0)
    assert (r.ttft, r.text, r.output_tokens, r.prompt_tokens) == (1.0, "abcd", 6, 7)
    assert r.forward_passes == 2 and r.finish_reason == "length"
    with pytest.raises(RuntimeError, match="bad threshold"):
        client.apply_chunk(r, {"error": {"message": "bad threshold"}}, 10.0, 12.0)


def test_forward_passes_key_preference():
    assert client.forward_passes({"mtp_forward_passes": 5, "spec_verify_ct": 9}) == 5
    assert client.forward_passes({"spec_verify_ct": 9}) == 9
    assert client.forward_passes({"mtp_forward_passes": 0}) is None
    assert client.forward_passes({"mtp_forward_passes": True}) is None
    assert client.forward_passes({}) is None


def test_payload_is_greedy_and_has_no_mtp_fields():
    p = client.generate_payload("hi", 16)
    assert p == {"text": "hi", "sampling_params": {"temperature": 0.0, "max_new_tokens": 16}, "stream": True}
    assert client.generate_payload("hi", 16, ignore_eos=True)["sampling_params"]["ignore_eos"] is True
    assert client.generate_payload("hi", 16, temperature=0.7)["sampling_params"]["temperature"] == 0.7


def test_run_load_against_a_fake_streaming_server():
    """The closed loop keeps at most `concurrency` requests in flight, parses the SSE stream
    and records failures (HTTP 500, error chunk) without stopping the run."""
    from aiohttp import web

    state = {"inflight": 0, "peak": 0}

    async def generate(request):
        body = await request.json()
        assert body["sampling_params"]["temperature"] == 0.0 and "custom_params" not in body
        if body["text"] == "fail":
            return web.Response(status=500, text="boom")
        state["inflight"] += 1
        state["peak"] = max(state["peak"], state["inflight"])
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            if body["text"] == "bad":  # SGLang reports a rejected request as an error chunk
                await resp.write(b'data: {"error": {"message": "bad request"}}\n\ndata: [DONE]\n\n')
                return resp
            for n in (2, 4):
                await asyncio.sleep(0.01)
                chunk = {"text": body["text"] * n, "meta_info": {"completion_tokens": n, "mtp_forward_passes": n // 2}}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        finally:
            state["inflight"] -= 1
        return resp

    async def main():
        app = web.Application()
        app.router.add_post("/generate", generate)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            texts = ["a", "b", "fail", "c", "bad", "d", "e"]
            payloads = [client.generate_payload(t, 8) for t in texts]
            return await client.run_load(f"http://127.0.0.1:{port}", payloads, 2)
        finally:
            await runner.cleanup()

    results, wall = asyncio.run(main())
    assert state["peak"] == 2 and wall > 0
    by_text = dict(zip(["a", "b", "fail", "c", "bad", "d", "e"], results))
    assert by_text["a"].ok and by_text["a"].text == "aaaa" and by_text["a"].output_tokens == 4
    assert by_text["a"].forward_passes == 2 and 0 < by_text["a"].ttft <= by_text["a"].latency
    assert not by_text["fail"].ok and "HTTP 500: boom" in by_text["fail"].error
    assert not by_text["bad"].ok and "bad request" in by_text["bad"].error
    assert sum(r.ok for r in results) == 5


# ---------------------------------------------------------------- server process handling
def test_server_command_flags():
    cmd = server.server_command("/m", 1234, ["--decode-mode", "ntp"], "cpu", ["--tp", "1"], python="py")
    assert cmd[:3] == ["py", "-m", "sglang.launch_server"] and cmd[cmd.index("--model-path") + 1] == "/m"
    assert "torch_native" in cmd and "--disable-cuda-graph" in cmd and cmd[-4:] == ["--decode-mode", "ntp", "--tp", "1"]
    assert "--disable-overlap-schedule" in cmd  # like MTP servers on a CPU: ratios compare decoding only
    assert "--device" not in server.server_command("/m", 1, [], "cuda")


def test_server_stop_kills_the_whole_process_group(tmp_path):
    child_pid = tmp_path / "child.pid"
    code = ("import subprocess, sys, time, pathlib; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"pathlib.Path({str(child_pid)!r}).write_text(str(c.pid)); time.sleep(120)")
    srv = server.Server([sys.executable, "-c", code], 1, tmp_path / "log.txt")
    with srv:
        deadline = time.monotonic() + 30
        while not (child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(child_pid.read_text())
        assert srv.alive()
    assert not srv.alive()
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)  # the grandchild is gone too


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan may wait a moment for a reaper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_server_that_exits_during_startup_reports_its_log(tmp_path):
    srv = server.Server([sys.executable, "-c", "print('no such model'); raise SystemExit(3)"], server.free_port(),
                        tmp_path / "log.txt")
    with srv, pytest.raises(server.ServerError, match="(?s)exited with code 3.*no such model"):
        srv.wait_healthy(timeout=30)


_FAKE_HTTP_SERVER = """
import http.server, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

try:
    httpd = http.server.HTTPServer(("127.0.0.1", port), Health)
except OSError:  # as SGLang does: log the bind error, and stay up without serving
    print(f"ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): "
          "address already in use", flush=True)
    time.sleep(120)
httpd.serve_forever()
"""


def test_a_server_whose_port_was_taken_starts_again_on_a_free_one(tmp_path):
    # The port from free_port() can be taken before the server binds it (several servers
    # starting at once): SGLang then logs the bind error and never serves. Waiting for it
    # used to run into the start-up timeout (15 minutes) and lose the whole benchmark.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = server.Server([sys.executable, "-c", _FAKE_HTTP_SERVER, "--port", str(port)], port,
                            tmp_path / "log.txt")
        with srv:
            srv.wait_healthy(timeout=60)
            assert srv.port != port and srv.url == f"http://127.0.0.1:{srv.port}"
            assert srv.cmd[srv.cmd.index("--port") + 1] == str(srv.port)
            with urllib.request.urlopen(srv.url + "/health", timeout=5) as r:
                assert r.status == 200


def test_a_signal_during_stop_is_held_until_the_server_is_gone(tmp_path):
    # The server ignores SIGTERM, so stop() must wait and SIGKILL it; a SIGTERM sent to us
    # meanwhile must not abort the shutdown (it is re-raised afterwards).
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    srv = server.Server([sys.executable, "-c", code], 1, tmp_path / "log.txt")
    srv.start()
    deadline = time.monotonic() + 30
    while "up" not in srv.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    def interrupted(*_):  # what an unshielded stop() would die of (a plain test failure)
        raise RuntimeError("SIGTERM interrupted the shutdown")

    old = {signal.SIGALRM: signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM)),
           signal.SIGTERM: signal.signal(signal.SIGTERM, interrupted)}
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt, match="during server shutdown"):
            srv.stop(grace=0.5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in old.items():
            signal.signal(s, handler)
        if srv.alive():
            os.killpg(srv.proc.pid, signal.SIGKILL)
    assert not srv.alive()
