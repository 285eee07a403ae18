"""GPU check of the plugin inside a real SGLang Engine (needs SGLang; part of bench/gpu_check.sh).

    python bench/gpu_engine_check.py [--model PATH] [--attention-backend flashinfer]

Starts one Engine with CUDA graphs on (verify, k_max 4, the default token budget) on a tiny
random MTP model (or ``--model``), then checks what the CPU CI cannot:

1. verify output equals plain decoding (``{"mtp": false}`` on the same Engine, its own DECODE
   graphs) at 1, 8 and 48 concurrent requests, i.e. at every width the budget picks;
2. the widths used (``meta_info["mtp_widths"]``) narrow as the batch grows;
3. the graph sets per width were built: the server log (this process's stderr, captured by
   gpu_check.sh) has one "MTP graphs ..." line per set and "MTP graph memory per width";
4. throughput of each level, MTP vs plain, printed as a ratio (not asserted: a random model
   accepts few drafts);
5. overlap scheduling is still on (the plugin turns it off on a CPU only);
6. the host KV lengths the sync-free FlashInfer plan is fed equal the device's at every decode
   step (``SGLANG_MTP_CHECK_HOST_LENGTHS=1``: the worker fails the Engine where they differ). On a
   GPU with overlap scheduling they come from SGLang's pinned copy, a path no CPU test takes.

gpu_check.sh runs it twice: on FlashInfer (narrower widths, the sync-free plan) and on Triton
(always the full width; its log must say the verify mask was not allocated, verify_mask.py).

Prints SKIP and exits 0 where SGLang cannot be imported (the lent GPU machines have none).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--attention-backend", default="flashinfer")
    ap.add_argument("--new", type=int, default=32)
    args = ap.parse_args()
    try:
        import sglang  # noqa: F401
    except Exception as e:
        print(f"SKIP: SGLang is not importable here ({type(e).__name__}: {e})")
        return 0
    from bench.serve import smoke_model
    from sglang_mtp.sglang_plugin import flags

    model = args.model or smoke_model()
    os.environ["SGLANG_MTP_CHECK_HOST_LENGTHS"] = "1"  # read by the worker in the scheduler process
    eng = flags.engine(model, strategy="verify", k_max=4, attention_backend=args.attention_backend,
                       log_level="info", mem_fraction_static=0.5)
    bad = 0
    try:
        overlap_off = eng.get_server_info().get("disable_overlap_schedule")
        print(f"overlap scheduling: {'off' if overlap_off else 'on'} (expected on, as in SGLang on a GPU)")
        bad += bool(overlap_off)
        prompts = [list(range(5 + i, 40 + i)) for i in range(48)]
        for level in (1, 8, 48):
            ids = prompts[:level]
            sp = {"temperature": 0, "max_new_tokens": args.new, "ignore_eos": True}
            t = time.perf_counter()
            plain = eng.generate(input_ids=ids, sampling_params=dict(sp, custom_params={"mtp": False}))
            t_plain = time.perf_counter() - t
            t = time.perf_counter()
            mtp = eng.generate(input_ids=ids, sampling_params=sp)
            t_mtp = time.perf_counter() - t
            same = sum(a["output_ids"] == b["output_ids"] for a, b in zip(plain, mtp))
            widths = {}
            for o in mtp:
                for w, n in (o["meta_info"].get("mtp_widths") or {}).items():
                    widths[w] = widths.get(w, 0) + n
            print(f"level {level}: verify == plain for {same}/{level}; widths {widths}; "
                  f"{t_plain / t_mtp:.2f}x plain's speed")
            bad += same != level
    finally:
        eng.shutdown()
    print("FAILED" if bad else "OK: verify output equals plain decoding at every level, overlap scheduling on")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
