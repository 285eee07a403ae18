"""Per-decode-step cost of the MTP plugin vs plain SGLang on the CPU Engine (single request).

    python bench/plugin_step_profile.py --mode ntp            # SGLang's own decoding (plugin idle)
    python bench/plugin_step_profile.py --mode static:2       # MTP, static k=2
    python bench/plugin_step_profile.py --mode static:2 --plain-requests   # {"mtp": false} on an MTP server
    python bench/plugin_step_profile.py --mode static:2 --pyspy 8          # + py-spy profile of the scheduler
    python bench/plugin_step_profile.py --count-ops                        # no Engine: ops per step (worker_step.py)

Starts one Engine (tiny random model, torch_native attention, float32), warms it up, then
times ``--reps`` single greedy requests of ``--new`` tokens and of 1 token: the time of one
decode pass = (t(new) - t(1)) / (passes(new) - passes(1)), passes from ``mtp_forward_passes``
(or spec_verify_ct + 1, or the token count for plain SGLang). Prints medians as JSON.
With ``--pyspy S``, records the scheduler process for S seconds while requests run and
prints the top functions by own and total samples.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CPU = dict(device="cpu", attention_backend="torch_native", disable_cuda_graph=True, dtype="float32",
           mem_fraction_static=0.3, max_total_tokens=4096, log_level="error")


def start(mode: str, extra: dict):
    import sglang

    from bench.serve import smoke_model
    from sglang_mtp.sglang_plugin import flags

    model = smoke_model()
    if mode == "ntp":
        return sglang.Engine(model_path=model, **CPU, **extra)
    kind, *f = mode.split(":")
    cfg = {"strategy": kind, "k_max": int(f[-1])}
    if kind == "conf_adapt":
        cfg["threshold"] = float(f[0])
    return flags.engine(model, **cfg, **CPU, **extra)


def passes(meta: dict, n_tokens: int, plain: bool) -> int:
    if "mtp_forward_passes" in meta:
        return meta["mtp_forward_passes"]
    if not plain and meta.get("spec_verify_ct"):
        return meta["spec_verify_ct"] + 1
    return n_tokens


_SCHED = []


def sched_cpu() -> float:
    """CPU seconds used so far by the scheduler process (all its threads): robust to other
    processes competing for the cores, unlike wall time."""
    import psutil

    if not _SCHED:
        _SCHED.append(psutil.Process(scheduler_pid()))
    t = _SCHED[0].cpu_times()
    return t.user + t.system


def one(eng, ids, n, custom):
    sp = {"temperature": 0, "max_new_tokens": n, "ignore_eos": True}
    if custom is not None:
        sp["custom_params"] = custom
    c = sched_cpu()
    t = time.perf_counter()
    out = eng.generate(input_ids=ids, sampling_params=sp)
    dt = time.perf_counter() - t
    out["meta_info"]["_cpu"] = sched_cpu() - c
    return dt, len(out["output_ids"]), out["meta_info"]


def scheduler_pid() -> int:
    import psutil

    for c in psutil.Process().children(recursive=True):
        if "scheduler" in " ".join(c.cmdline()).lower() or "scheduler" in c.name().lower():
            return c.pid
    raise RuntimeError("no scheduler child process found")


def pyspy(eng, ids, n, custom, seconds: float, out: Path):
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            one(eng, ids, n, custom)

    th = threading.Thread(target=loop)
    th.start()
    time.sleep(1.0)
    proc = subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(scheduler_pid()),
                    "-d", str(int(seconds)), "-r", "200", "-f", "raw", "-o", str(out), "--nonblocking"],
                   check=False, capture_output=True, text=True)
    stop.set()
    th.join()
    if not out.exists():
        raise RuntimeError(f"py-spy failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    own, tot, total = collections.Counter(), collections.Counter(), 0
    for line in out.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        cnt = int(cnt)
        frames = stack.split(";")
        total += cnt
        own[frames[-1]] += cnt
        for fr in set(frames):
            tot[fr] += cnt
    return total, own, tot


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="ntp", help="ntp | static:K | conf_adapt:TAU:K | verify:K")
    ap.add_argument("--plain-requests", action="store_true", help='send {"mtp": false} requests')
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--pyspy", type=float, default=0.0)
    ap.add_argument("--disable-overlap", action="store_true")
    ap.add_argument("--count-ops", action="store_true",
                    help="no Engine: aten ops and CPU time of the worker's decode step (bench/worker_step.py)")
    ap.add_argument("--batch", default="1,8,32", help="--count-ops batch sizes")
    ap.add_argument("--k-max", type=int, default=8, help="--count-ops k_max")
    args = ap.parse_args()
    if args.count_ops:
        from bench.worker_step import report

        print(f"MTP worker decode step, k_max {args.k_max}, mixed conf_adapt/static/verify/plain requests")
        print(report([int(b) for b in args.batch.split(",")], args.k_max))
        return
    extra = {"disable_overlap_schedule": True} if args.disable_overlap else {}
    eng = start(args.mode, extra)
    custom = {"mtp": False} if args.plain_requests else None
    plain = args.mode == "ntp" or args.plain_requests
    ids = list(range(5, 37))  # a 32-token prompt
    try:
        for _ in range(3):
            one(eng, ids, args.new, custom)
        per_pass, cpu_pass, tok_s, effk = [], [], [], []
        for _ in range(args.reps):
            t1, n1, m1 = one(eng, ids, 1, custom)
            tn, nn, mn = one(eng, ids, args.new, custom)
            p1, pn = passes(m1, n1, plain), passes(mn, nn, plain)
            per_pass.append((tn - t1) / max(pn - p1, 1) * 1e3)
            cpu_pass.append((mn["_cpu"] - m1["_cpu"]) / max(pn - p1, 1) * 1e3)
            tok_s.append(nn / tn)
            effk.append(nn / pn)
        res = {"mode": args.mode, "plain_requests": args.plain_requests, "new": args.new,
               "ms_per_decode_pass_median": round(statistics.median(per_pass), 3),
               "ms_per_decode_pass_all": [round(x, 3) for x in per_pass],
               "sched_cpu_ms_per_pass_median": round(statistics.median(cpu_pass), 3),
               "sched_cpu_ms_per_pass_all": [round(x, 3) for x in cpu_pass],
               "tok_s_median": round(statistics.median(tok_s), 1), "effective_k": statistics.median(effk)}
        print(json.dumps(res))
        if args.pyspy:
            out = ROOT / "artifacts" / f"pyspy-{args.mode.replace(':', '_')}{'-plain' if plain else ''}.txt"
            out.parent.mkdir(exist_ok=True)
            total, own, tot = pyspy(eng, ids, args.new, custom, args.pyspy, out)
            print(f"py-spy: {total} samples ({out})")
            print("-- own --")
            for fr, c in own.most_common(25):
                print(f"{100 * c / total:5.1f}% {fr}")
            print("-- total --")
            for fr, c in tot.most_common(45):
                print(f"{100 * c / total:5.1f}% {fr}")
    finally:
        eng.shutdown()


if __name__ == "__main__":
    main()
