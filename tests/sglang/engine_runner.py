"""Start ONE SGLang Engine on CPU and run a list of jobs against it (a subprocess of the tests).

    python -m tests.sglang.engine_runner SPEC.json

SPEC: {"model": path, "mtp": {strategy, threshold, k_max, ...} or null (plain SGLang),
"engine": {extra Engine kwargs}, "out": result path, "jobs": [job, ...]}. Jobs:

- {"op": "generate", "input_ids": [[..]], "sampling_params": dict or [dict], "return_logprob": bool}
  -> {"outputs": [{"output_ids", "cached_tokens", "finish_reason", "forward_passes", "logprobs"}]}
  or {"error": msg} (forward_passes / widths: meta_info["mtp_forward_passes"] /
  meta_info["mtp_widths"], None when absent)
- {"op": "staggered", "input_ids": [[..]], "sampling_params": [..], "delay": s}: requests
  submitted one by one, ``delay`` seconds apart, running concurrently -> same as generate
- {"op": "flush"}: flush the radix cache
- {"op": "probe"}: wait for an idle leak check and return the pool accounting line
- {"op": "server_info", "keys": [..]}: those entries of the Engine's resolved server arguments

An Engine that fails kills its parent, hence the subprocess; this runner writes its results
after every job so a crash still leaves what ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from tests.sglang.live_server import probe_idle

HERE = Path(__file__).resolve().parent
CPU_ENGINE = dict(device="cpu", attention_backend="torch_native", disable_cuda_graph=True, dtype="float32",
                  mem_fraction_static=0.3, max_total_tokens=2048, log_level="error")


def _summary(out: dict) -> dict:
    meta = out["meta_info"]
    lp = meta.get("output_token_logprobs")
    return {
        "output_ids": out["output_ids"],
        "cached_tokens": meta.get("cached_tokens"),
        "finish_reason": (meta.get("finish_reason") or {}).get("type"),
        "forward_passes": meta.get("mtp_forward_passes"),
        "widths": meta.get("mtp_widths"),
        "logprobs": None if lp is None else [[v, t] for v, t, *_ in lp],
    }


def _generate(eng, job):
    kw = dict(input_ids=job["input_ids"], sampling_params=job.get("sampling_params"),
              return_logprob=job.get("return_logprob", False))
    try:
        outs = eng.generate(**kw)
    except Exception as e:  # a rejected request: the message is the result
        return {"error": f"{type(e).__name__}: {e}"}
    return {"outputs": [_summary(o) for o in outs]}


def _staggered(eng, job):
    params = job["sampling_params"]

    async def one(i, ids):
        await asyncio.sleep(i * job.get("delay", 0.05))
        return await eng.async_generate(input_ids=ids, sampling_params=params[i])

    async def all_():
        return await asyncio.gather(*(one(i, ids) for i, ids in enumerate(job["input_ids"])))

    outs = eng.loop.run_until_complete(all_())
    return {"outputs": [_summary(o) for o in outs]}


def _session(eng, job):
    """One streaming session: each of ``job["turns"]`` in turn, continuing the session, with
    its own sampling params; then closed."""
    sid = eng.open_session(capacity_of_str_len=4096, streaming=True)
    outs = []
    try:
        for ids, params in zip(job["turns"], job["sampling_params"]):
            outs.append(_summary(eng.generate(input_ids=ids, sampling_params=params, session_params={"id": sid})))
    finally:
        eng.close_session(sid)
    return {"outputs": outs}


def _flush(eng, tries: int = 20):
    # SGLang refuses to flush while requests are still being finalised: retry briefly.
    for _ in range(tries):
        if getattr(eng.flush_cache(), "success", True):
            return {"flushed": True}
        time.sleep(0.5)
    return {"flushed": False}


def main(spec_path: str):
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, str(HERE / "probe_dist"))  # the test probe plugin (children inherit)
    probe_file = spec["out"] + ".probe"
    os.environ["SGLANG_MTP_TEST_PROBE"] = probe_file
    os.environ["SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE"] = "1"
    import sglang

    from sglang_mtp.sglang_plugin import flags

    kwargs = {**CPU_ENGINE, **spec.get("engine", {})}
    results = []
    t0 = time.time()
    try:
        if spec.get("mtp") is not None:
            eng = flags.engine(spec["model"], **spec["mtp"], **kwargs)
        else:
            eng = sglang.Engine(model_path=spec["model"], **kwargs)
    except Exception as e:  # start-up refused before any subprocess started
        Path(spec["out"]).write_text(json.dumps({"startup_error": f"{type(e).__name__}: {e}",
                                                 "results": []}))
        return
    startup = time.time() - t0
    ops = {"generate": _generate, "staggered": _staggered, "session": _session}
    try:
        for job in spec["jobs"]:
            if job["op"] == "flush":
                res = _flush(eng)
            elif job["op"] == "probe":
                res = probe_idle(probe_file)
            elif job["op"] == "server_info":
                info = eng.get_server_info()
                res = {k: info.get(k) for k in job["keys"]}
            else:
                res = ops[job["op"]](eng, job)
            results.append(res)
            Path(spec["out"]).write_text(json.dumps({"startup_s": startup, "results": results}))
    finally:
        eng.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
