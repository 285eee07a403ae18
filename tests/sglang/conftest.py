"""Fixtures shared by the HTTP server tests: ONE MTP server for the whole session."""

from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def server(tmp_path_factory):
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
        stop(proc, log)
