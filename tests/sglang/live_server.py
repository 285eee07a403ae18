"""A real ``python -m sglang.launch_server`` on the CPU for the HTTP tests (loopback only).

The server runs in its own process group with one torch thread, SGLang's strict idle memory
check on, and the test probe plugin recording SGLang's idle KV-pool accounting.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, payload, timeout=120):
    """(status, decoded JSON body or the raw text); a dropped connection raises."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, _body(r.read())
    except urllib.error.HTTPError as e:
        return e.code, _body(e.read())


def _body(raw: bytes):
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return raw.decode(errors="replace")


def health(base) -> int:
    with urllib.request.urlopen(base + "/health", timeout=30) as r:
        return r.status


def wait_healthy(base, proc, timeout=400):
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


def child_env(*paths, **extra) -> dict:
    """The environment of an SGLang child process: no py-spy or core dumps on a crash, the
    worker's host-length check on, overlap scheduling kept on a CPU, the repository (plus
    ``paths``) importable, then ``extra``."""
    path = os.pathsep.join([str(REPO), *map(str, paths), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "SGLANG_PYSPY_DUMP_BEFORE_CRASH": "0", "SGLANG_CUDA_COREDUMP_BEFORE_CRASH": "0",
            "SGLANG_MTP_CHECK_HOST_LENGTHS": "1",  # every decode step: host lengths == device (worker.py)
            # overlap scheduling stays on as on a GPU (an MTP server turns it off on a CPU by
            # default; launch() and test_engine_verify run that default)
            "SGLANG_MTP_CPU_OVERLAP": "1",
            "PYTHONPATH": path, **extra}


def launch(tmp, ckpt, *flags, probe=None):
    port = free_port()
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(ckpt), "--port", str(port),
           "--device", "cpu", "--attention-backend", "torch_native", "--disable-cuda-graph", "--dtype", "float32",
           "--mem-fraction-static", "0.3", "--max-total-tokens", "2048", "--log-level", "warning", *flags]
    # With ``probe``, the test probe plugin records SGLang's idle KV-pool check in that file.
    paths = [REPO / "tests" / "sglang" / "probe_dist"] if probe is not None else []
    extra = {"SGLANG_MTP_TEST_PROBE": str(probe)} if probe is not None else {}
    # A launched server runs the CPU default (no overlap scheduling), what `launch_server` gives
    # a CPU user; the Engine tests keep overlap on (child_env)
    env = child_env(*paths, OMP_NUM_THREADS="1", SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE="1",
                    SGLANG_MTP_CPU_OVERLAP="0", **extra)
    log = open(tmp / f"server-{port}.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", log


def stop(proc, log):
    os.killpg(proc.pid, signal.SIGTERM)  # our own session: the server and its children
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def probe_idle(path, timeout=60.0):
    """SGLang's next idle KV-pool check: {"leak", "available", "total", ...} (see probe.py)."""
    start = time.time()
    while time.time() - start < timeout:
        if os.path.exists(path) and os.path.getmtime(path) > start + 0.5:
            with open(path) as f:
                rec = json.load(f)
            nums = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rec["messages"][0])}
            retracted = Path(str(path) + ".retracted")
            return {"leak": rec["leak"], "line": rec["messages"][0], **nums,
                    "retracted": int(retracted.read_text()) if retracted.exists() else 0}
        time.sleep(0.2)
    return {"error": "no idle leak check observed"}
