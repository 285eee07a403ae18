"""kv_commit against its plain-torch reference and its properties, on every available device."""

import pytest
import torch

from sglang_mtp import ops
from sglang_mtp.reference import kv_commit_ref


def make_case(B, W, P=None, C=64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    P = P or B + 5
    table = torch.randint(0, 10_000, (P, C), generator=gen, dtype=torch.int32)
    pool = torch.randperm(P, generator=gen)[:B]
    lens = torch.randint(0, C - W, (B,), generator=gen)
    loc = torch.randperm(50_000, generator=gen)[: B * W].view(B, W) + 100  # distinct slots
    keep = torch.randint(0, W + 1, (B,), generator=gen, dtype=torch.int32)
    return [t.to(device) for t in (table, pool, lens, loc, keep)]


# 300 and 1500 cross the CUDA kernel's 256-request chunks (the released-slot carry between chunks)
@pytest.mark.parametrize("B,W", [(1, 1), (1, 31), (19, 7), (99, 15), (3, 2), (300, 7), (1500, 3)])
def test_matches_reference(device, B, W):
    table, pool, lens, loc, keep = make_case(B, W, seed=B * 100 + W, device=device)
    ref_table = table.cpu().clone()
    ref = kv_commit_ref(ref_table, pool.cpu(), lens.cpu(), loc.cpu(), keep.cpu())
    out = ops.kv_commit(table, pool, lens, loc, keep)
    assert torch.equal(table.cpu(), ref_table)
    for got, want in zip(out, ref):
        assert got.dtype == want.dtype and torch.equal(got.cpu(), want)


def test_properties(device):
    B, W = 19, 9
    table, pool, lens, loc, keep = make_case(B, W, seed=7, device=device)
    before = table.clone()
    new_lens, released, n = ops.kv_commit(table, pool, lens, loc, keep)
    table, before, pool, lens, loc, keep = (t.cpu() for t in (table, before, pool, lens, loc, keep))
    new_lens, released, n = new_lens.cpu(), released.cpu(), int(n)
    touched = torch.zeros_like(table, dtype=torch.bool)
    for b in range(B):
        row, s, k = int(pool[b]), int(lens[b]), int(keep[b])
        # committed slots sit in order right after the committed prefix
        assert table[row, s : s + k].tolist() == loc[b, :k].tolist()
        touched[row, s : s + k] = True
    assert torch.equal(table[~touched], before[~touched])  # everything else is bit-identical
    assert torch.equal(new_lens, lens + keep.long())
    kept = {int(loc[b, j]) for b in range(B) for j in range(int(keep[b]))}
    assert n == B * W - len(kept)
    assert set(released[:n].tolist()) == set(loc.flatten().tolist()) - kept  # exactly the complement
    assert released[n:].eq(-1).all()


def test_keep_all_and_keep_none(device):
    table, pool, lens, loc, _ = make_case(4, 5, seed=3, device=device)
    W = 5
    _, rel, n = ops.kv_commit(table, pool, lens, loc, torch.full((4,), W, dtype=torch.int32, device=device))
    assert int(n) == 0 and rel.eq(-1).all()
    _, rel, n = ops.kv_commit(table, pool, lens, loc, torch.zeros(4, dtype=torch.int32, device=device))
    assert int(n) == 20 and rel.tolist() == loc.flatten().tolist()


def test_empty_batch(device):
    table = torch.zeros(3, 8, dtype=torch.int32, device=device)
    e64 = torch.empty(0, dtype=torch.int64, device=device)
    new_lens, rel, n = ops.kv_commit(table, e64, e64, e64.view(0, 4), torch.empty(0, dtype=torch.int32, device=device))
    assert new_lens.numel() == 0 and rel.numel() == 0 and int(n) == 0


def test_opcheck(device):
    args = make_case(5, 6, seed=4, device=device)
    torch.library.opcheck(torch.ops.sglang_mtp.kv_commit, tuple(args))


def _args(**over):
    table, pool, lens, loc, keep = make_case(3, 4, P=6, C=16, seed=1)
    a = dict(req_to_token=table, req_pool_indices=pool, seq_lens=lens.clamp(max=10), cache_loc=loc, keep=keep)
    a.update(over)
    return a


BAD = [
    (dict(req_to_token=torch.zeros(6, 16, dtype=torch.int64)), "req_to_token must be Int"),
    (dict(req_to_token=torch.zeros(6, 16, 2, dtype=torch.int32)), "req_to_token must be 2-D"),
    (dict(req_pool_indices=torch.tensor([0, 1, 1])), "req_pool_indices repeats row 1"),
    (dict(req_pool_indices=torch.tensor([0, 1, 6])), r"req_pool_indices\[2\] = 6 is outside \[0, 6\)"),
    (dict(keep=torch.tensor([0, 5, 1], dtype=torch.int32)), r"keep\[1\] = 5 is outside \[0, W = 4\]"),
    (dict(keep=torch.tensor([0, -1, 1], dtype=torch.int32)), r"keep\[1\] = -1"),
    (dict(keep=torch.tensor([0, 1], dtype=torch.int32)), "keep must have B = 3"),
    (dict(seq_lens=torch.tensor([0, 14, 0]), keep=torch.tensor([0, 3, 0], dtype=torch.int32)),
     "would commit past the 16 columns"),
    (dict(cache_loc=torch.zeros(3, 4, dtype=torch.int32)), "cache_loc must be Long"),
    (dict(seq_lens=torch.zeros(3, dtype=torch.int32)), "seq_lens must be Long"),
]


@pytest.mark.parametrize("over,message", BAD)
def test_bad_input_names_the_argument(over, message):
    args = _args(**over)
    before = args["req_to_token"].clone()
    with pytest.raises(ValueError, match=message):
        ops.kv_commit(**args)
    assert torch.equal(args["req_to_token"], before)  # a rejected call writes nothing

