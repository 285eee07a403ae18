"""sglang_mtp.step: one batched decoding step, checked against a per-request Python rule."""

import pytest
import torch

from sglang_mtp.step import accept, propose, step_positions, strategy_tensors
from sglang_mtp.strategy import Strategy

MASK = 7
V = 37


pytestmark = pytest.mark.usefixtures("one_thread")


def naive_step(rows, pending, draft_len, k, tau, verify, stops=(), budget=None):
    """The common.md step rule for ONE request, written plainly. rows: float [W, V]."""
    x = rows.double().clone()
    x[:, MASK] = float("-inf")
    g = x.argmax(1).tolist()
    conf = x.softmax(1).max(1).values.tolist()
    base = len(pending) - 1 - draft_len
    if verify:
        j = 0
        while j < draft_len and pending[base + 1 + j] == g[base + j]:
            j += 1
        out = g[base: base + j + 1]
        keep = len(pending) - draft_len + j
        nxt = g[base + j: base + j + (k if j == draft_len else 1)]
    else:
        run = 0
        while run < k and conf[base + run] >= tau:
            run += 1
        out = g[base: base + max(run, 1)]
        keep, nxt = len(pending), None
    for i, t in enumerate(out):
        if t in stops:
            out = out[: i + 1]
            break
    if budget is not None:
        out = out[:budget]
    finished = any(t in stops for t in out) or (budget is not None and len(out) >= budget) or not out
    return out, keep, (nxt if verify else out), (len(nxt) - 1 if verify else 0), finished


def make_case(B, seed, max_k=6, width_extra=0, verify_frac=0.4):
    """Random requests: pending tokens, drafts that partly match the logits' argmax."""
    g = torch.Generator().manual_seed(seed)
    ks = torch.randint(1, max_k + 1, (B,), generator=g).tolist()
    plens = torch.randint(1, max_k + 1, (B,), generator=g).tolist()
    W = max(p + k - 1 for p, k in zip(plens, ks)) + width_extra
    logits = torch.randn(B * W, V, generator=g) * 3
    logits[torch.randint(0, B * W, (B,), generator=g), MASK] = 50.0  # the mask must never win
    reqs = []
    for b in range(B):
        verify = bool(torch.rand(1, generator=g) < verify_frac)
        p = [int(t) for t in torch.randint(0, V, (plens[b],), generator=g)]
        dl = 0
        if verify and plens[b] > 1:
            dl = int(torch.randint(0, plens[b], (1,), generator=g))
            x = logits[b * W: (b + 1) * W].clone()
            x[:, MASK] = float("-inf")
            gi = x.argmax(1).tolist()
            base = plens[b] - 1 - dl
            good = int(torch.randint(0, dl + 1, (1,), generator=g))  # drafts that match
            for i in range(dl):
                p[base + 1 + i] = gi[base + i] if i < good else (gi[base + i] + 1) % V
        tau = float(torch.rand(1, generator=g)) * 0.6 if not verify else 0.0
        reqs.append(dict(pending=p, draft_len=dl, k=ks[b], tau=tau, verify=verify))
    return logits, W, reqs


def run_batch(logits, reqs, max_k, stops=None, budget=None):
    B = len(reqs)
    P = max(len(r["pending"]) for r in reqs)
    pending = torch.full((B, P), -5, dtype=torch.int64)
    for b, r in enumerate(reqs):
        pending[b, : len(r["pending"])] = torch.tensor(r["pending"])
    plen = torch.tensor([len(r["pending"]) for r in reqs])
    stop_t = None if stops is None else torch.tensor(stops, dtype=torch.int64)
    return accept(
        logits, pending, plen, torch.tensor([r["draft_len"] for r in reqs]), torch.tensor([r["k"] for r in reqs]),
        torch.tensor([r["tau"] for r in reqs]), torch.tensor([r["verify"] for r in reqs]), MASK, max_k,
        stop_token_ids=stop_t, budget=budget,
    )


def check_against_naive(out, logits, W, reqs, stops=(), budget=None):
    for b, r in enumerate(reqs):
        want, keep, nxt, ndl, fin = naive_step(
            logits[b * W: (b + 1) * W], r["pending"], r["draft_len"], r["k"], r["tau"], r["verify"], stops,
            None if budget is None else int(budget[b]),
        )
        n = int(out.emit_len[b])
        assert out.emitted[b, :n].tolist() == want, (b, r)
        assert (out.emitted[b, n:] == -1).all()
        assert int(out.keep[b]) == keep
        m = int(out.next_pending_len[b])
        assert out.next_pending[b, :m].tolist() == nxt
        assert (out.next_pending[b, m:] == MASK).all()
        assert int(out.next_draft_len[b]) == ndl
        assert bool(out.finished[b]) == fin


@pytest.mark.parametrize("B", [1, 5, 19])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("width_extra", [0, 3])
def test_accept_matches_per_request_rule(B, seed, width_extra):
    logits, W, reqs = make_case(B, seed, width_extra=width_extra)
    out = run_batch(logits, reqs, max_k=6)
    check_against_naive(out, logits, W, reqs)
    assert MASK not in out.emitted.tolist() and MASK not in out.next_pending[out.next_pending != MASK].tolist()


@pytest.mark.parametrize("seed", range(3))
def test_accept_stop_tokens_and_budget(seed):
    logits, W, reqs = make_case(9, seed + 10)
    g = logits.view(9, W, V).clone()
    g[..., MASK] = float("-inf")
    stops = sorted(set(g.argmax(-1)[:, ::2].flatten().tolist()))[:4]  # stops that do occur
    budget = torch.randint(0, 4, (9,), generator=torch.Generator().manual_seed(seed))
    out = run_batch(logits, reqs, max_k=6, stops=stops, budget=budget)
    check_against_naive(out, logits, W, reqs, stops, budget)
    assert (out.emit_len <= budget.int()).all()


def test_batch_equals_single_requests():
    logits, W, reqs = make_case(7, 3, verify_frac=0.5)
    out = run_batch(logits, reqs, max_k=6)
    for b, r in enumerate(reqs):
        one = run_batch(logits[b * W: (b + 1) * W], [r], max_k=6)
        for field in out._fields:
            assert torch.equal(getattr(out, field)[b], getattr(one, field)[0]), field


def test_static_accepts_whole_block_and_threshold_one_accepts_one():
    logits = torch.randn(2 * 5, V, generator=torch.Generator().manual_seed(1))
    pending, plen, dl = torch.tensor([[3, 4], [5, 0]]), torch.tensor([2, 1]), torch.zeros(2, dtype=torch.long)
    k, ver = torch.tensor([4, 5]), torch.tensor([False, False])
    full = accept(logits, pending, plen, dl, k, torch.tensor([0.0, 0.0]), ver, MASK, 5)
    assert full.emit_len.tolist() == [4, 5] and full.keep.tolist() == [2, 1]
    assert full.next_pending_len.tolist() == [4, 5] and full.next_draft_len.tolist() == [0, 0]
    one = accept(logits, pending, plen, dl, k, torch.tensor([1.0, 1.0]), ver, MASK, 5)
    assert one.emit_len.tolist() == [1, 1]
    assert one.emitted[:, 0].tolist() == full.emitted[:, 0].tolist()


def test_verify_first_pass_emits_one_and_proposes_drafts():
    # First pass: the prompt is pending, no drafts; drafts come from the k-1 mask rows.
    prompt, k = [11, 12, 13], 4
    W = len(prompt) + k - 1
    logits = torch.randn(W, V, generator=torch.Generator().manual_seed(2))
    out = accept(logits, torch.tensor([prompt]), torch.tensor([3]), torch.tensor([0]), torch.tensor([k]),
                 torch.tensor([0.0]), torch.tensor([True]), MASK, k)
    x = logits.clone()
    x[:, MASK] = float("-inf")
    g = x.argmax(1).tolist()
    assert out.emitted[0, :1].tolist() == [g[2]] and int(out.emit_len[0]) == 1
    assert int(out.keep[0]) == 3
    assert out.next_pending[0].tolist() == g[2:6] and int(out.next_draft_len[0]) == 3


def test_propose_layout_and_positions():
    pending = torch.tensor([[1, 2, 3], [4, 0, 0]])
    ids = propose(pending, torch.tensor([3, 1]), 5, MASK)
    assert ids.tolist() == [[1, 2, 3, MASK, MASK], [4, MASK, MASK, MASK, MASK]]
    assert propose(pending, torch.tensor([3, 1]), 2, MASK).tolist() == [[1, 2], [4, MASK]]
    assert step_positions(torch.tensor([10, 0]), 3).tolist() == [[10, 11, 12], [0, 1, 2]]


def test_strategy_tensors():
    k, thr, ver = strategy_tensors([Strategy.ntp(), Strategy.static(3), Strategy.conf_adapt(0.8, 5), Strategy.verify(4)])
    assert k.tolist() == [1, 3, 5, 4] and ver.tolist() == [False, False, False, True]
    assert thr.tolist() == pytest.approx([0.0, 0.0, 0.8, 0.0])
    assert k.dtype == torch.int32 and thr.dtype == torch.float32


def test_step_runs_on_meta_tensors_so_it_never_syncs_with_the_host():
    # Meta tensors have no data: any .item()/.tolist()/.nonzero() in the step would raise.
    B, W, Vm = 4, 7, 50
    meta = dict(device="meta")
    pending = torch.empty(B, 4, dtype=torch.int64, **meta)
    plen = torch.empty(B, dtype=torch.int32, **meta)
    ids = propose(pending, plen, W, MASK)
    out = accept(torch.empty(B * W, Vm, **meta), pending, plen, torch.empty(B, dtype=torch.int32, **meta),
                 torch.empty(B, dtype=torch.int32, **meta), torch.empty(B, **meta),
                 torch.empty(B, dtype=torch.bool, **meta), MASK, 4,
                 stop_token_ids=torch.empty(2, dtype=torch.int64, **meta), budget=torch.empty(B, dtype=torch.int64, **meta))
    assert ids.shape == (B, W) and out.emitted.shape == (B, 4) and out.finished.shape == (B,)
