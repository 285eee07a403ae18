"""GPU check of the whole fused decode step: step_inputs -> a fake forward -> confidence_scan
-> accept_commit, run (1) eagerly under ``torch.cuda.set_sync_debug_mode("error")`` (any host
sync raises), (2) captured in ONE CUDA graph and replayed, and (3) on the CPU reference ops.
All three must agree exactly, for several steps in a row (the state written by one step feeds
the next). The sampled step (truncate -> sample_scan, mixed greedy and sampled requests) must
agree exactly between eager and graph replay; its agreement with the CPU kernels is reported
(float rounding on the two devices may flip a near-tie). Part of ``bench/gpu_check.sh``;
exits 1 on a mismatch.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sglang_mtp import ops  # noqa: E402
from sglang_mtp.ops.step_reference import accept_commit_ref, step_inputs_ref  # noqa: E402
from sglang_mtp.sampling import RowSampling, Sampling  # noqa: E402
from sglang_mtp.step import sample_tokens  # noqa: E402
from tests.test_mtp_step import MASK, random_state  # noqa: E402

V = 512
ACCEPT_STATE = ("pending", "pending_len", "draft_len", "k", "verify", "first", "first_token", "sampled")
INPUT_STATE = ("pending", "pending_len", "draft_len", "k", "threshold", "verify", "first")


def fake_forward(input_ids, positions, table):
    """Logits that depend on every input (token and position), peaked enough for ConfAdapt."""
    return table[input_ids.reshape(-1) % table.shape[0]] * 4 + positions.reshape(-1, 1).float() * 1e-3


def step(st, rows, seq_lens, req_to_token, table, W, fused=True, sampling=None, k_cap=ops.NO_CAP):
    inputs = (ops.step_inputs if fused else step_inputs_ref)(
        *[st[n] for n in INPUT_STATE], rows, seq_lens, req_to_token, MASK, W, 4096, k_cap)
    ids, pos, attn, _loc, start, length, tau = inputs
    logits = fake_forward(ids, pos, table)
    if sampling is None:
        tokens, _, accept = ops.confidence_scan(logits, start, length, tau, None, MASK)
    else:
        tokens, accept = sample_tokens(logits, start, length, tau, None, MASK, sampling, pos[:, 0] + 1, W)
    out = (ops.accept_commit if fused else accept_commit_ref)(
        tokens, accept, rows, attn, *[st[n] for n in ACCEPT_STATE], None, MASK, W, k_cap)
    return inputs + tuple(out)


def capture(run_step, graph_st, state):
    """Warm up on a side stream, then capture one step in a CUDA graph that reads and writes
    ``graph_st`` in place; capture does not run the kernels, so graph_st is reset to ``state``."""
    warm = {n: t.clone() for n, t in graph_st.items()}
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        run_step(warm)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        graph_out = run_step(graph_st)
    for n, t in state.items():
        graph_st[n].copy_(t.cuda())
    return g, graph_out


def eager_then_replay(run_eager, g):
    """One eager step under sync-debug mode (any host sync raises), then one graph replay."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = run_eager()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    g.replay()
    torch.cuda.synchronize()
    return got


def check(B, k_max, steps=4, k_cap=ops.NO_CAP):
    state, rows, seq_lens, req_to_token, W, _ = random_state(B, k_max, seed=B + k_max, C=1024)
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(1))
    cpu = {n: t.clone() for n, t in state.items()}
    eager = {n: t.cuda() for n, t in state.items()}
    graph_st = {n: t.cuda() for n, t in state.items()}
    dev = [t.cuda() for t in (rows, seq_lens, req_to_token, table)]
    g, graph_out = capture(lambda st: step(st, *dev, W, k_cap=k_cap), graph_st, state)
    ok = True
    for i in range(steps):
        ref = step(cpu, rows, seq_lens, req_to_token, table, W, fused=False, k_cap=k_cap)
        got = eager_then_replay(lambda: step(eager, *dev, W, k_cap=k_cap), g)
        same = all(torch.equal(a.cpu(), r) and torch.equal(c.cpu(), r) for a, c, r in zip(got, graph_out, ref))
        same &= all(torch.equal(eager[n].cpu(), cpu[n]) and torch.equal(graph_st[n].cpu(), cpu[n]) for n in cpu)
        ok &= same
        print(f"mtp step B={B} k_max={k_max} k_cap={k_cap} step {i}: {'OK' if same else 'MISMATCH'} "
              "(eager, graph, reference)")
    return ok


def check_sampled(B, k_max, steps=4):
    state, rows, seq_lens, req_to_token, W, _ = random_state(B, k_max, seed=7 * B + k_max, C=1024)
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(2))
    kinds = [Sampling(0.0), Sampling(0.8), Sampling(1.0, top_k=20, top_p=0.9), Sampling(1.3, min_p=0.05)]
    rs = RowSampling.build([kinds[i % 4] for i in range(B)], list(range(B)))
    cpu = {n: t.clone() for n, t in state.items()}
    eager = {n: t.cuda() for n, t in state.items()}
    graph_st = {n: t.cuda() for n, t in state.items()}
    dev = [t.cuda() for t in (rows, seq_lens, req_to_token, table)]
    rs_dev = RowSampling(*(t.cuda() for t in rs[:5]), rs.truncates)
    g, graph_out = capture(lambda st: step(st, *dev, W, sampling=rs_dev), graph_st, state)
    ok = True
    for i in range(steps):
        ref = step(cpu, rows, seq_lens, req_to_token, table, W, sampling=rs)
        got = eager_then_replay(lambda: step(eager, *dev, W, sampling=rs_dev), g)
        same = all(torch.equal(a, c) for a, c in zip(got, graph_out))
        emitted_cpu = sum(int(torch.equal(a.cpu(), r)) for a, r in zip(got, ref))
        ok &= same
        print(f"sampled step B={B} k_max={k_max} step {i}: eager == graph {'OK' if same else 'MISMATCH'}; "
              f"{emitted_cpu}/{len(ref)} outputs equal to the CPU kernels")
        for n in cpu:  # continue every path from the GPU's state
            cpu[n] = eager[n].cpu().clone()
            graph_st[n].copy_(eager[n])
    return ok


if __name__ == "__main__":
    results = [check(B, k) for B, k in [(1, 2), (19, 8), (99, 4), (300, 16), (3, 64)]]
    results += [check(B, k, k_cap=c) for B, k, c in [(19, 8, 2), (300, 16, 4)]]  # load-adaptive caps
    results += [check_sampled(B, k) for B, k in [(1, 4), (37, 8), (256, 4)]]
    raise SystemExit(0 if all(results) else 1)
