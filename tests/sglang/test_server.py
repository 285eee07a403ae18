"""``python -m sglang.launch_server --decode-mode mtp`` on CPU: native ``/generate`` and the
OpenAI-compatible ``/v1/completions``, each with per-request ``custom_params``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.models import random_prompts, tiny_tokenizer
from tests.sglang.harness import REPO, build_checkpoint, mtp_params, reference

NEW = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, payload, timeout=120):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _wait_healthy(base, proc, timeout=400):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    model, _ = build_checkpoint(tmp / "ckpt")
    port = _free_port()
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(tmp / "ckpt"), "--port", str(port),
           "--device", "cpu", "--attention-backend", "torch_native", "--disable-cuda-graph", "--dtype", "float32",
           "--mem-fraction-static", "0.3", "--max-total-tokens", "2048", "--log-level", "warning",
           "--decode-mode", "mtp", "--mtp-strategy", "conf_adapt", "--mtp-threshold", "0.5", "--mtp-k-max", "3"]
    env = {**os.environ, "SGLANG_PYSPY_DUMP_BEFORE_CRASH": "0", "SGLANG_CUDA_COREDUMP_BEFORE_CRASH": "0"}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        if not _wait_healthy(base, proc):
            raise AssertionError("server did not start:\n" + (tmp / "server.log").read_text()[-6000:])
        yield base, model
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # our own session: the server and its children
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_native_generate_with_custom_params(server):
    base, model = server
    prompts = random_prompts(2, seed=11)
    specs = ["conf_adapt:0.5:3", "static:2"]
    status, body = _post(base + "/generate", {
        "input_ids": prompts,
        "sampling_params": [{"temperature": 0, "max_new_tokens": NEW},
                            {"temperature": 0, "max_new_tokens": NEW, "custom_params": mtp_params("static:2")}],
    })
    assert status == 200, body
    assert [b["output_ids"] for b in body] == reference(model, prompts, specs, NEW)


def test_openai_completion_with_custom_params(server):
    base, model = server
    tok = tiny_tokenizer()
    prompt = "abc de"
    status, body = _post(base + "/v1/completions", {
        "model": "default", "prompt": prompt, "max_tokens": NEW, "temperature": 0,
        "custom_params": mtp_params("verify:3"),
    })
    assert status == 200, body
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ref = reference(model, [ids], ["verify:3"], NEW)[0]
    assert body["choices"][0]["text"] == tok.decode(ref, skip_special_tokens=True)


def test_bad_custom_params_is_a_client_error(server):
    base, _ = server
    status, body = _post(base + "/generate", {
        "input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4, "custom_params": {"mtp": {"k_max": 9}}}})
    assert status == 400 and "k_max" in json.dumps(body), (status, body)
    status, _ = _post(base + "/generate", {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4}})
    assert status == 200


def test_sgl_function_with_per_gen_mtp_settings(server):
    import sglang as sgl

    from sglang_mtp.sglang_plugin.client import MTPRuntimeEndpoint, mtp_gen

    base, model = server
    tok = tiny_tokenizer()
    backend = MTPRuntimeEndpoint(base, mtp={"strategy": "static", "k_max": 2})

    @sgl.function
    def program(s):
        s += "hello"
        s += mtp_gen("a", max_tokens=8, temperature=0, mtp={"strategy": "static", "k_max": 3})
        s += " x" + sgl.gen("b", max_tokens=8, temperature=0)  # the endpoint default

    state = program.run(backend=backend)
    ids = tok("hello", add_special_tokens=False)["input_ids"]
    ref_a = reference(model, [ids], ["static:3"], 8)[0]
    assert state["a"] == tok.decode(ref_a, skip_special_tokens=True)
    ids_b = tok("hello" + state["a"] + " x", add_special_tokens=False)["input_ids"]
    ref_b = reference(model, [ids_b], ["static:2"], 8)[0]
    assert state["b"] == tok.decode(ref_b, skip_special_tokens=True)
    # Meaningful: the per-gen, endpoint and server settings give different outputs here.
    assert ref_a != reference(model, [ids], ["static:2"], 8)[0]
    assert ref_b != reference(model, [ids_b], ["conf_adapt:0.5:3"], 8)[0]
