"""How long ``--mtp-token-budget auto`` calibrates: the first request of a fresh CPU Engine
runs the calibration at its first decode step; the second request shows the normal latency.

    OMP_NUM_THREADS=1 python bench/calibration_time.py --model ~/.cache/sglang-mtp/smollm2/mtp --strategy verify --k-max 4

The server's log line ``MTP width policy calibrated: ...; calibration took X s`` has the
table it chose and the measurement alone (``--log-level info``, the default here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="local checkpoint with the <MTP> token")
    ap.add_argument("--strategy", default="verify", choices=("verify", "conf_adapt", "static"))
    ap.add_argument("--k-max", type=int, default=4)
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    from sglang_mtp.sglang_plugin import flags

    eng = flags.engine(str(Path(args.model).expanduser()), strategy=args.strategy, k_max=args.k_max,
                       token_budget="auto", device="cpu", attention_backend="torch_native",
                       disable_cuda_graph=True, dtype="float32", mem_fraction_static=0.3, max_total_tokens=8192,
                       log_level=args.log_level)
    try:
        params = {"temperature": 0, "max_new_tokens": 4}
        seconds = []
        for prompt in ([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]):
            t0 = time.perf_counter()
            eng.generate(input_ids=[prompt], sampling_params=params)
            seconds.append(time.perf_counter() - t0)
        print(f"first request (calibrates) {seconds[0]:.1f} s, second request {seconds[1]:.2f} s", flush=True)
    finally:
        eng.shutdown()


if __name__ == "__main__":
    main()
