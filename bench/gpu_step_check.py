"""GPU check of the whole fused decode step: step_inputs -> a fake forward -> confidence_scan
-> accept_commit, run (1) eagerly under ``torch.cuda.set_sync_debug_mode("error")`` (any host
sync raises), (2) captured in ONE CUDA graph and replayed, and (3) on the CPU reference ops.
All three must agree exactly, for several steps in a row (the state written by one step feeds
the next). Part of ``bench/gpu_check.sh``; exits 1 on a mismatch.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sglang_mtp import ops  # noqa: E402
from sglang_mtp.ops.step_reference import accept_commit_ref, step_inputs_ref  # noqa: E402
from tests.test_mtp_step import MASK, random_state  # noqa: E402

V = 512
ACCEPT_STATE = ("pending", "pending_len", "draft_len", "k", "verify", "first", "first_token", "sampled")
INPUT_STATE = ("pending", "pending_len", "draft_len", "k", "threshold", "verify", "first")


def fake_forward(input_ids, positions, table):
    """Logits that depend on every input (token and position), peaked enough for ConfAdapt."""
    return table[input_ids.reshape(-1) % table.shape[0]] * 4 + positions.reshape(-1, 1).float() * 1e-3


def step(st, rows, seq_lens, req_to_token, table, W, fused=True):
    inputs = (ops.step_inputs if fused else step_inputs_ref)(
        *[st[n] for n in INPUT_STATE], rows, seq_lens, req_to_token, MASK, W, 4096)
    ids, pos, attn, _loc, start, length, tau = inputs
    logits = fake_forward(ids, pos, table)
    tokens, _, accept = ops.confidence_scan(logits, start, length, tau, None, MASK)
    out = (ops.accept_commit if fused else accept_commit_ref)(
        tokens, accept, rows, attn, *[st[n] for n in ACCEPT_STATE], None, MASK, W)
    return inputs + tuple(out)


def check(B, k_max, steps=4):
    state, rows, seq_lens, req_to_token, W, _ = random_state(B, k_max, seed=B + k_max, C=1024)
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(1))
    cpu = {n: t.clone() for n, t in state.items()}
    eager = {n: t.cuda() for n, t in state.items()}
    graph_st = {n: t.cuda() for n, t in state.items()}
    dev = [t.cuda() for t in (rows, seq_lens, req_to_token, table)]
    # Warm up on a side stream, capture one step (the graph reads and writes graph_st in place).
    warm = {n: t.clone() for n, t in graph_st.items()}
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step(warm, *dev, W)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        graph_out = step(graph_st, *dev, W)
    for n, t in state.items():  # capture does not run the kernels: start from the same state
        graph_st[n].copy_(t.cuda())
    ok = True
    for i in range(steps):
        ref = step(cpu, rows, seq_lens, req_to_token, table, W, fused=False)
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = step(eager, *dev, W)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        g.replay()
        torch.cuda.synchronize()
        same = all(torch.equal(a.cpu(), r) and torch.equal(c.cpu(), r) for a, c, r in zip(got, graph_out, ref))
        same &= all(torch.equal(eager[n].cpu(), cpu[n]) and torch.equal(graph_st[n].cpu(), cpu[n]) for n in cpu)
        ok &= same
        print(f"mtp step B={B} k_max={k_max} step {i}: {'OK' if same else 'MISMATCH'} (eager, graph, reference)")
    return ok


if __name__ == "__main__":
    results = [check(B, k) for B, k in [(1, 2), (19, 8), (99, 4), (300, 16), (3, 64)]]
    raise SystemExit(0 if all(results) else 1)
