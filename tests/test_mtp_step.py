"""step_inputs and accept_commit (the fused MTP decode step) against their plain-torch
references, on random worker states with mixed strategies, first steps and sampler fallbacks."""

import pytest
import torch

from sglang_mtp import ops
from sglang_mtp.ops.step_reference import accept_commit_ref, step_inputs_ref

MASK = 3
STATE = ("pending", "pending_len", "draft_len", "k", "threshold", "verify", "first", "first_token", "sampled")


def random_state(B, k_max, seed, C=400, plain=False):
    """P pool rows of worker state, B of them in the batch, as the worker keeps them."""
    gen = torch.Generator().manual_seed(seed)
    W, P = 2 * k_max - 1, B + 7
    r = lambda hi, n=P: torch.randint(0, hi, (n,), generator=gen)  # noqa: E731
    kind = torch.zeros(P, dtype=torch.long) if plain else r(4)  # 0 ntp, 1 static, 2 conf_adapt, 3 verify
    k = torch.where(kind == 0, 1, (1 + r(k_max)).clamp(min=2))  # k_max >= 2
    verify = kind == 3
    first = (k > 1) & (r(3) == 0)
    pending_len = torch.where(first, 1, 1 + (r(1 << 20) % k))
    draft_len = torch.where(verify & ~first, pending_len - 1, 0)
    state = dict(
        pending=torch.randint(4, 90, (P, W), generator=gen), pending_len=pending_len.int(),
        draft_len=draft_len.int(), k=k.int(), threshold=torch.rand(P, generator=gen) * (kind == 2),
        verify=verify, first=first, first_token=r(90) + 4, sampled=(k == 1) & (r(2) == 0))
    rows = torch.randperm(P, generator=gen)[:B]
    seq_lens = 1 + r(C - 2 * W, B)
    req_to_token = torch.randperm(max(50_000, P * C), generator=gen)[: P * C].view(P, C).int()
    return state, rows, seq_lens, req_to_token, W, gen


def fake_scan(state, rows, W, gen, blocks):
    """Argmax tokens [B*W] and accept lengths as the scan would give them (drafts often right)."""
    B = rows.numel()
    start, length, _ = blocks
    tokens = torch.randint(4, 90, (B, W), generator=gen)
    pend, pl, dl = state["pending"][rows], state["pending_len"][rows].long(), state["draft_len"][rows].long()
    base = pl - 1 - dl
    for b in range(B):  # a draft is the argmax of the row before it 70% of the time
        for i in range(int(dl[b])):
            if torch.rand((), generator=gen) < 0.7:
                tokens[b, base[b] + i] = pend[b, base[b] + 1 + i]
    accept = 1 + (torch.randint(0, 1 << 20, (B,), generator=gen) % length.long())
    accept = torch.where(state["verify"][rows], length.long(), accept)
    return tokens.reshape(-1), accept.int()


def to(device, *ts):
    return [t.to(device) if isinstance(t, torch.Tensor) else t for t in ts]


def run_step(state, rows, seq_lens, req_to_token, W, gen, device, with_samples=True, k_cap=ops.NO_CAP):
    st = {n: t.to(device) for n, t in state.items()}
    ref_st = {n: t.clone() for n, t in state.items()}
    args = (rows, seq_lens, req_to_token, MASK, W, 300, k_cap)
    s_args = [st[n] for n in STATE[:7]]
    got = ops.step_inputs(*s_args, *to(device, rows, seq_lens, req_to_token), MASK, W, 300, k_cap)
    want = step_inputs_ref(*[ref_st[n] for n in STATE[:7]], *args)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g.cpu(), w), (g, w)
    tokens, accept = fake_scan(state, rows, W, gen, want[4:])
    samples = torch.randint(4, 90, (rows.numel(),), generator=gen) if with_samples else None
    attn = want[2]
    out = ops.accept_commit(*to(device, tokens, accept, rows, attn), st["pending"], st["pending_len"],
                            st["draft_len"], st["k"], st["verify"], st["first"], st["first_token"], st["sampled"],
                            None if samples is None else samples.to(device), MASK, W, k_cap)
    ref = accept_commit_ref(tokens, accept, rows, attn, ref_st["pending"], ref_st["pending_len"],
                            ref_st["draft_len"], ref_st["k"], ref_st["verify"], ref_st["first"],
                            ref_st["first_token"], ref_st["sampled"], samples, MASK, W, k_cap)
    for g, w in zip(out, ref):
        assert g.dtype == w.dtype and torch.equal(g.cpu(), w), (g, w)
    for n in STATE:
        assert torch.equal(st[n].cpu(), ref_st[n]), n  # the state rows are written identically
    return out, ref_st


@pytest.mark.parametrize("B,k_max", [(1, 2), (19, 4), (99, 8), (7, 16), (3, 64)])
def test_matches_reference(device, B, k_max):
    state, rows, seq_lens, table, W, gen = random_state(B, k_max, seed=B * 100 + k_max)
    for step in range(3):  # consecutive steps: the written state feeds the next one
        _, state = run_step(state, rows, seq_lens, table, W, gen, device, with_samples=step != 1)


@pytest.mark.parametrize("k_cap", [1, 2, 3, 5])
def test_capped_steps_match_reference(device, k_cap):
    # Load-adaptive width: a narrower step (W = 2*k_cap - 1, at least 3 for first steps) whose
    # pending tokens fit it, as the worker's width choice guarantees (sglang_mtp.width).
    state, rows, seq_lens, table, W_max, gen = random_state(23, 8, seed=40 + k_cap)
    W = max(2 * k_cap - 1, 3)
    for step in range(3):
        pl = state["pending_len"].clamp(max=k_cap)
        state["pending_len"] = pl.int()
        state["draft_len"] = torch.where(state["verify"] & ~state["first"], pl - 1, 0).int()
        out, state = run_step(state, rows, seq_lens, table, W, gen, device, with_samples=step != 1, k_cap=k_cap)
        k_rows, first_cap = state["k"][rows].long(), 2 if step == 0 else 1
        # No block grows past the cap: at most k_cap new tokens and pending tokens per request.
        assert bool((state["pending_len"][rows].long() <= torch.minimum(k_rows, torch.tensor(max(k_cap, first_cap)))).all())
        assert bool((out[1].long() <= max(k_cap, first_cap)).all())


def test_cap_sets_the_next_draft_count(device):
    # verify with every draft right: the next drafts are the capped block's mask rows.
    state, rows, seq_lens, table, W, gen = random_state(1, 8, seed=3)
    r = int(rows[0])
    state["k"][r], state["verify"][r], state["first"][r] = 8, True, False
    state["pending_len"][r], state["draft_len"][r] = 3, 2
    st = {n: t.to(device) for n, t in state.items()}
    blocks = ops.step_inputs(*[st[n] for n in STATE[:7]], *to(device, rows, seq_lens, table), MASK, 5, 300, 3)
    assert int(blocks[5][0]) == 3  # verify's block = its drafts + 1, whatever the cap
    drafts = st["pending"][r, 1:3]
    tokens = torch.cat([st["pending"][r, :0], drafts, torch.tensor([40, 41, 42], device=device)])
    ops.accept_commit(tokens, torch.tensor([3], dtype=torch.int32, device=device), rows.to(device), blocks[2],
                      st["pending"], st["pending_len"], st["draft_len"], st["k"], st["verify"], st["first"],
                      st["first_token"], st["sampled"], None, MASK, 5, 3)
    assert int(st["pending_len"][r]) == 3 and int(st["draft_len"][r]) == 2  # k capped at 3: 2 new drafts


def test_width_one_for_all_plain_batches(device):
    state, rows, seq_lens, table, _, gen = random_state(11, 4, seed=5, plain=True)
    out, _ = run_step(state, rows, seq_lens, table, 1, gen, device)
    assert out[1].tolist() == [1] * 11  # one token each


def test_first_step_drops_t1_and_pins_it_as_next_input(device):
    # A first step re-runs the prompt's last row: its block is [t1, ...]; t1 was emitted by
    # the prefill, so the step emits the rest and feeds t1 back as pending token 0.
    state, rows, seq_lens, table, W, gen = random_state(1, 4, seed=9)
    r = int(rows[0])
    state["k"][r], state["verify"][r], state["threshold"][r] = 4, False, 0.0
    state["first"][r], state["pending_len"][r], state["draft_len"][r] = True, 1, 0
    state["first_token"][r] = 77
    state["pending"][r, 0] = 55  # x_{P-1}, the prompt's last token
    st = {n: t.to(device) for n, t in state.items()}
    ids, pos, attn, loc, start, length, _ = ops.step_inputs(*[st[n] for n in STATE[:7]],
                                                            *to(device, rows, seq_lens, table), MASK, W, 1000)
    assert ids[0].tolist() == [55] + [MASK] * (W - 1)
    assert int(attn[0]) == int(seq_lens[0]) - 1 and pos[0, 0].item() == int(seq_lens[0]) - 1
    assert int(loc[0, 0]) == int(table[r, int(seq_lens[0]) + W - 1])  # scratch, not the prefill's slot
    tokens = torch.tensor([77, 11, 12, 13] + [50] * (W - 4), device=device)
    emitted, emit_len, new_seq, last, _, _ = ops.accept_commit(
        tokens, torch.tensor([4], dtype=torch.int32, device=device), rows.to(device), attn, st["pending"],
        st["pending_len"], st["draft_len"], st["k"], st["verify"], st["first"], st["first_token"], st["sampled"],
        None, MASK, W)
    assert emitted[0, :3].tolist() == [11, 12, 13] and int(emit_len[0]) == 3 and int(last[0]) == 13
    # Only x_{P-1} was a real input, and its KV already existed: nothing new is committed.
    assert int(emitted[0, W]) == 0 and int(new_seq[0]) == int(seq_lens[0])
    assert st["pending"][r, :4].tolist() == [77, 11, 12, 13] and int(st["pending_len"][r]) == 4
    assert not bool(st["first"][r])


@pytest.mark.parametrize("name", ["step_inputs", "accept_commit"])
def test_opcheck(device, name):
    state, rows, seq_lens, table, W, gen = random_state(5, 3, seed=2)
    st = {n: t.to(device) for n, t in state.items()}
    if name == "step_inputs":
        args = (*[st[n] for n in STATE[:7]], *to(device, rows, seq_lens, table), MASK, W, 300, 2)
    else:
        blocks = step_inputs_ref(*[state[n] for n in STATE[:7]], rows, seq_lens, table, MASK, W, 300)
        tokens, accept = fake_scan(state, rows, W, gen, blocks[4:])
        args = (*to(device, tokens, accept, rows, blocks[2]), st["pending"], st["pending_len"], st["draft_len"],
                st["k"], st["verify"], st["first"], st["first_token"], st["sampled"], None, MASK, W, 2)
    torch.library.opcheck(getattr(torch.ops.sglang_mtp, name), args)


def _inputs_args(**over):
    state, rows, seq_lens, table, W, _ = random_state(4, 3, seed=1)
    a = dict(state, rows=rows, seq_lens=seq_lens, req_to_token=table)
    a.pop("first_token"), a.pop("sampled")
    a.update(over)
    return [a[n] for n in (*STATE[:7], "rows", "seq_lens", "req_to_token")], W


@pytest.mark.parametrize("over,message", [
    (dict(rows=torch.tensor([0, 1, 2, 99])), r"rows\[3\] = 99 is outside \[0, 11\)"),
    (dict(rows=torch.tensor([0, 1], dtype=torch.int32)), "rows must be Long"),
    (dict(pending_len=torch.ones(11, dtype=torch.int64)), "pending_len must be Int"),
    (dict(verify=torch.zeros(10, dtype=torch.bool)), "verify must have P"),
    (dict(seq_lens=torch.tensor([1, 2, 3, 398])), "runs past the 400 columns"),
    (dict(req_to_token=torch.zeros(11, 400, dtype=torch.int64)), "req_to_token must be Int"),
])
def test_bad_input_names_the_argument(over, message):
    args, W = _inputs_args(**over)
    with pytest.raises(ValueError, match=message):
        ops.step_inputs(*args, MASK, W, 300)


def test_bad_width_and_accept_len_are_named():
    args, W = _inputs_args()
    with pytest.raises(ValueError, match="width must be in"):
        ops.step_inputs(*args, MASK, W + 1, 300)
    with pytest.raises(ValueError, match="k_cap must be >= 1, got 0"):
        ops.step_inputs(*args, MASK, W, 300, 0)
    state, rows, seq_lens, _, W, gen = random_state(2, 3, seed=4)
    tokens = torch.zeros(2 * W, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"accept_len\[1\] = 0 is outside"):
        ops.accept_commit(tokens, torch.tensor([1, 0], dtype=torch.int32), rows, seq_lens, *[state[n] for n in (
            "pending", "pending_len", "draft_len", "k", "verify", "first", "first_token", "sampled")], None, MASK, W)
