"""The batched verify attention of the torch_native backend (CPU) against per-request causal
SDPA over each request's KV: W queries per request, different KV lengths, GQA, padding slots."""

import pytest
import torch
from torch.nn.functional import scaled_dot_product_attention

from sglang_mtp.sglang_plugin.verify_attention import verify_attention, verify_plan


def per_request(q, k_cache, v_cache, table, rows, prefix, W, scale):
    out = []
    for b in range(rows.numel()):
        L = int(prefix[b]) + W
        slots = table[rows[b], :L].long()
        k, v = k_cache[slots].transpose(0, 1), v_cache[slots].transpose(0, 1)  # [Hkv, L, D]
        qb = q[b * W:(b + 1) * W].transpose(0, 1)  # [Hq, W, D]
        allowed = torch.arange(L)[None, :] <= (int(prefix[b]) + torch.arange(W))[:, None]
        o = scaled_dot_product_attention(qb[None], k[None], v[None], attn_mask=allowed, scale=scale,
                                         enable_gqa=qb.shape[0] != k.shape[0])[0]
        out.append(o.transpose(0, 1))
    return torch.cat(out)


@pytest.mark.parametrize("Hq,Hkv,W", [(4, 4, 1), (4, 2, 3), (8, 2, 11)])
def test_matches_per_request_attention(Hq, Hkv, W):
    gen = torch.Generator().manual_seed(W * 10 + Hq)
    B, D, slots, C = 5, 16, 600, 80
    prefix = torch.tensor([1, 17, 4, 40, 9])
    table = torch.randperm(slots, generator=gen)[: 7 * C].view(7, C).int()  # unrelated rows pad
    rows = torch.tensor([3, 0, 6, 2, 5])
    k_cache = torch.randn(slots, Hkv, D, generator=gen)
    v_cache = torch.randn(slots, Hkv, D, generator=gen)
    q = torch.randn(B * W, Hq, D, generator=gen)
    got = verify_attention(q, k_cache, v_cache, verify_plan(table, rows, prefix, W), 0.25)
    want = per_request(q, k_cache, v_cache, table, rows, prefix, W, 0.25)
    assert got.shape == (B * W, Hq, D)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_queries_never_see_later_positions():
    # Changing the KV after a query's position must not change that query's output.
    gen = torch.Generator().manual_seed(1)
    W, D = 4, 8
    table = torch.arange(40).view(1, 40).int()
    k_cache, v_cache = torch.randn(40, 2, D, generator=gen), torch.randn(40, 2, D, generator=gen)
    q = torch.randn(W, 2, D, generator=gen)
    rows, prefix = torch.tensor([0]), torch.tensor([10])
    plan = verify_plan(table, rows, prefix, W)
    before = verify_attention(q, k_cache, v_cache, plan, 0.3)
    k2, v2 = k_cache.clone(), v_cache.clone()
    k2[12:], v2[12:] = 0.0, 5.0  # positions 12.. : only query 2 (position 12) and 3 see them
    after = verify_attention(q, k2, v2, plan, 0.3)
    assert torch.equal(before[:2], after[:2]) and not torch.allclose(before[2:], after[2:])
