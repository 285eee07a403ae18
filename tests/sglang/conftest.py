"""Fixtures shared by the HTTP server tests: ONE MTP server for the whole session."""

import os
import signal
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def _live_server(tmp_path_factory):
    """``--decode-mode mtp`` (conf_adapt 0.5, k_max 3) on a tiny random Llama with <MTP>."""
    pytest.importorskip("sglang", reason="SGLang is not installed (requirements/sglang-cpu.txt)")
    from tests.sglang.harness import build_checkpoint
    from tests.sglang.live_server import launch, stop, wait_healthy

    tmp = tmp_path_factory.mktemp("server")
    model, _ = build_checkpoint(tmp / "ckpt")
    probe = tmp / "probe.json"
    proc, base, log = launch(tmp, tmp / "ckpt", "--decode-mode", "mtp", "--mtp-strategy", "conf_adapt",
                             "--mtp-threshold", "0.5", "--mtp-k-max", "3", probe=probe)
    try:
        if not wait_healthy(base, proc):
            raise AssertionError("server did not start:\n" + open(log.name).read()[-6000:])
        yield SimpleNamespace(base=base, model=model, probe=str(probe), proc=proc, log=log.name, tmp=tmp)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)  # a stopped group would only take SIGTERM once resumed
        stop(proc, log)


@pytest.fixture
def server(_live_server):
    """The session's server, running only during a test that uses it: an idle SGLang scheduler
    polls on a whole core, which the rest of the suite (after the server tests) needs on a
    2-core machine. Stopped (SIGSTOP, its process group) after each test, resumed before."""
    os.killpg(_live_server.proc.pid, signal.SIGCONT)
    yield _live_server
    os.killpg(_live_server.proc.pid, signal.SIGSTOP)
