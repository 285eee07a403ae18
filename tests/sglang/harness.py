"""Shared helpers for the SGLang Engine tests: the checkpoint, the reference, the runner.

Each Engine runs in its own subprocess (``engine_runner.py``) because a failing Engine kills
its parent process; one Engine start costs 30-60 s on 2 cores, so each start runs many jobs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sglang.live_server import REPO, child_env

ENGINE_TIMEOUT = 600

sglang = pytest.importorskip("sglang", reason="SGLang is not installed (requirements/sglang-cpu.txt)")


def build_checkpoint(path: Path, with_mask: bool = True):
    """Save a tiny random Llama (with the <MTP> token unless ``with_mask`` is False)."""
    from tests.models import save_checkpoint, tiny_model, tiny_mtp_model

    if with_mask:
        model, mask_id = tiny_mtp_model("llama", seed=0)
    else:
        model, mask_id = tiny_model("llama", seed=0), None
    save_checkpoint(path, model)
    return model, mask_id


def reference(model, prompts, strategies, max_new_tokens, stop_token_ids=None, sampling=None, seed=None):
    """Reference decoder tokens, one list per prompt (strategies: one spec per prompt;
    sampling / seed: as ``sglang_mtp.decode.generate`` takes them)."""
    from sglang_mtp.decode import generate

    out = generate(model, prompts, strategy=list(strategies), max_new_tokens=max_new_tokens,
                   stop_token_ids=stop_token_ids, sampling=sampling, seed=seed)
    return [r.tokens for r in out]


def run_engine(tmp_path: Path, name: str, model_path, jobs, mtp=None, engine=None, timeout=ENGINE_TIMEOUT, env=None):
    """Run ``jobs`` against one Engine in a subprocess.

    ``env``: extra environment variables for the Engine's processes.
    Returns the runner's record: ``results`` (one per job), ``startup_s``, and
    ``startup_error`` when the Engine refused to start.
    """
    out = tmp_path / f"{name}.json"
    spec = {"model": str(model_path), "mtp": mtp, "engine": engine or {}, "jobs": jobs, "out": str(out)}
    spec_path = tmp_path / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = child_env(**(env or {}))
    proc = subprocess.run([sys.executable, "-m", "tests.sglang.engine_runner", str(spec_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout[-4000:] + proc.stderr[-8000:]
    data = json.loads(out.read_text()) if out.exists() else {"results": [], "startup_s": None}
    done = "startup_error" in data or len(data["results"]) == len(jobs)
    if proc.returncode != 0 or not done:
        raise AssertionError(f"engine {name} failed (rc={proc.returncode}, "
                             f"{len(data['results'])}/{len(jobs)} jobs done):\n{log}")
    data["log"] = log
    return data


def assert_idle_pool(flush, probe, before=None):
    """After a cache flush (``flush``: the runner's flush result), SGLang's next idle check
    (``probe``) saw no leak and every KV slot free; ``before``: an idle check taken before the
    requests, which must have seen the same."""
    assert flush["flushed"], flush
    assert probe.get("leak") is False and probe["available"] == probe["total"], probe
    if before is not None:
        assert before.get("leak") is False and before["available"] == probe["available"], (before, probe)


def output_ids(result):
    """The token lists of a generate / staggered job's result (fails on a rejected job)."""
    assert "error" not in result, result
    return [o["output_ids"] for o in result["outputs"]]


def mtp_params(spec):
    """``custom_params`` for a reference strategy spec such as ``"static:4"``."""
    from sglang_mtp.strategy import Strategy

    s = Strategy.parse(spec)
    if s.kind == "ntp":
        return {"mtp": False}
    if s.kind == "conf_adapt":
        return {"mtp": {"strategy": "conf_adapt", "threshold": s.threshold, "k_max": s.k}}
    return {"mtp": {"strategy": s.kind, "k_max": s.k}}
