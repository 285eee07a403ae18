"""Kernel benchmark: fused ops vs the unfused PyTorch composition, in the same run.

Usage: python bench/bench_kernels.py [--device cpu|cuda] [--out bench/results] [--quick]
Checks correctness first, then times (warm-up, repeats, median; CUDA events on a GPU), and
prints a markdown table with bytes moved, achieved GB/s, the share of the copy bandwidth
measured on the same device, and the speed-up over the unfused baseline. Writes JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/ (state generator)
from sglang_mtp import ops  # noqa: E402
from sglang_mtp.ops.step_reference import accept_commit_ref, step_inputs_ref


def unfused_scan(logits, start, lens, tau, stops, suppress, k):
    """What one would write without the fused op (uniform blocks of k rows)."""
    x = logits.float().clone()  # .float() alone would alias a float32 input
    x[:, suppress] = float("-inf")
    probs = torch.softmax(x, dim=-1)
    conf, tok = probs.max(dim=-1)
    ok = (conf.view(-1, k) >= tau[:, None]).int().cumprod(dim=1).sum(dim=1).clamp(min=1)
    is_stop = torch.isin(tok.view(-1, k), stops)
    first_stop = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, torch.full_like(ok, k))
    return tok, conf, torch.minimum(ok, first_stop).int()


def timed(fn, device, min_time=0.3, max_reps=200, graph=True):
    """Median seconds per call. On a GPU, calls are recorded into a CUDA graph and replayed
    (as SGLang's decode loop runs them), so launch overhead from Python does not count."""
    for _ in range(5):
        fn()
    if device == "cuda":
        return _timed_graph(fn) if graph else _timed_events(fn, 30)
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < 10 or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _timed_graph(fn, inner=20, reps=30):
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    graph.replay()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3 / inner)
    return statistics.median(times)


def _timed_events(fn, reps):
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(times)


def copy_bandwidth(device, nbytes=1 << 28):
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), device)
    return 2 * nbytes / t / 1e9  # read + write


def bench_scan(device, B, k, V, dtype, peak):
    R = B * k
    gen = torch.Generator().manual_seed(B * k + V)
    logits = (torch.randn(R, V, generator=gen) * 3).to(dtype).to(device)
    start = torch.arange(0, R, k, dtype=torch.int32, device=device)
    lens = torch.full((B,), k, dtype=torch.int32, device=device)
    tau = torch.full((B,), 0.5, device=device)
    stops = torch.tensor([2, 7], device=device)
    fused = lambda: ops.confidence_scan(logits, start, lens, tau, stops, 11)  # noqa: E731
    base = lambda: unfused_scan(logits, start, lens, tau, stops, 11, k)  # noqa: E731
    f, u = fused(), base()
    assert torch.equal(f[0], u[0]) and torch.equal(f[2], u[2]), "fused and unfused disagree"
    torch.testing.assert_close(f[1], u[1], rtol=1e-4, atol=1e-6)
    t_f, t_u = timed(fused, device), timed(base, device)
    nbytes = logits.numel() * logits.element_size() + R * 12
    gbs = nbytes / t_f / 1e9
    return dict(op="confidence_scan", B=B, k=k, V=V, dtype=str(dtype).replace("torch.", ""), fused_us=t_f * 1e6,
                unfused_us=t_u * 1e6, speedup=t_u / t_f, bytes=nbytes, GBps=gbs, pct_copy_bw=100 * gbs / peak,
                Gelem_s=logits.numel() / t_f / 1e9)


def bench_step(device, B, k_max, peak):
    """step_inputs + accept_commit (the decode step around the forward and the scan) vs their
    plain-torch definitions, on a random mixed-strategy worker state."""
    from tests.test_mtp_step import MASK, STATE, fake_scan, random_state

    state, rows, seq_lens, table, W, gen = random_state(B, k_max, seed=B)
    blocks = step_inputs_ref(*[state[n] for n in STATE[:7]], rows, seq_lens, table, MASK, W, 4096)
    tokens, accept = fake_scan(state, rows, W, gen, blocks[4:])
    st = {n: t.to(device) for n, t in state.items()}
    rows, seq_lens, table, tokens, accept, attn = (t.to(device) for t in (rows, seq_lens, table, tokens, accept,
                                                                         blocks[2]))
    s_args = [st[n] for n in STATE[:7]]
    a_args = [st[n] for n in ("pending", "pending_len", "draft_len", "k", "verify", "first", "first_token", "sampled")]

    def fused():
        ops.step_inputs(*s_args, rows, seq_lens, table, MASK, W, 4096)
        ops.accept_commit(tokens, accept, rows, attn, *a_args, None, MASK, W)

    def unfused():
        step_inputs_ref(*s_args, rows, seq_lens, table, MASK, W, 4096)
        accept_commit_ref(tokens, accept, rows, attn, *a_args, None, MASK, W)

    t_f, t_u = timed(fused, device), timed(unfused, device)
    nbytes = B * W * 8 * 7 + B * 64  # state rows, forward inputs and step outputs (int64)
    return dict(op="mtp_step", B=B, k=k_max, fused_us=t_f * 1e6, unfused_us=t_u * 1e6, speedup=t_u / t_f,
                bytes=nbytes, GBps=nbytes / t_f / 1e9, pct_copy_bw=100 * nbytes / t_f / 1e9 / peak)


def hardware(device):
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                 platform.processor())
    load = os.getloadavg()[0]
    return (f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"load average {load:.1f} at start (torch {torch.__version__})")


def table(rows, hw, peak):
    out = [f"Hardware: {hw}; measured copy bandwidth {peak:.1f} GB/s", "",
           "| op | B | k | V | dtype | fused us | unfused us | speed-up | GB/s | % copy BW | Gelem/s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        elems = f"{r['Gelem_s']:.2f}" if "Gelem_s" in r else "-"
        out.append(f"| {r['op']} | {r['B']} | {r['k']} | {r.get('V', '-')} | {r.get('dtype', 'int')} | "
                   f"{r['fused_us']:.1f} | {r['unfused_us']:.1f} | {r['speedup']:.2f}x | {r['GBps']:.1f} | "
                   f"{r['pct_copy_bw']:.0f}% | {elems} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--quick", action="store_true", help="one small configuration per op (smoke run)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for both sides (0 = torch default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    peak = copy_bandwidth(a.device)
    grid = [(1, 4, 32000)] if a.quick else [(B, k, V) for V in (32000, 151936) for B in (1, 4, 16) for k in (4, 16)]
    if a.device == "cuda" and not a.quick:  # R * V >= 2^26: the bandwidth-bound regime
        grid += [(64, 16, 151936)]
        # R = 528 / 700 / 768 rows: just past the one-CTA-per-row switch (R >= 4 x SMs on an
        # H100/H200) a nearly empty last wave would show up as a GB/s dip.
        grid += [(132, 4, 151936), (175, 4, 151936), (192, 4, 151936)]
    dtypes = [torch.float32] if a.quick else [torch.float32, torch.bfloat16]
    rows = [bench_scan(a.device, B, k, V, dt, peak) for dt in dtypes for (B, k, V) in grid]
    hw = hardware(a.device)
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, f"kernels-{a.device}{'-quick' if a.quick else ''}")
    save(stem, rows, hw, peak)  # the scan rows are kept whatever happens to the step rows
    for B in [4] if a.quick else [1, 16, 256]:
        try:
            rows.append(bench_step(a.device, B, 8, peak))
        except Exception as e:  # e.g. a graph capture that fails on a new GPU stack: say so, keep the rest
            print(f"mtp_step B={B}: FAILED ({type(e).__name__}: {e})")
    print(save(stem, rows, hw, peak))


def save(stem, rows, hw, peak) -> str:
    """Write ``stem``.json and .md; returns the markdown table."""
    md = table(rows, hw, peak)
    with open(stem + ".json", "w") as f:
        json.dump(dict(hardware=hw, copy_GBps=peak, rows=rows), f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(md + "\n")
    return md


if __name__ == "__main__":
    main()
