"""Attention of the W-wide MTP decode forward for SGLang's ``torch_native`` backend (CPU).

torch_native runs a TARGET_VERIFY batch through its prefill path, which loops over the
requests and pads each one's W queries to its whole KV length: per layer, B SDPA calls of
(L + W) x (L + W) for W useful query rows. Its decode path (plain decoding) is also one SDPA
call per request. This module computes the same attention in one SDPA call per layer for
the whole batch: each request's W queries against its committed KV plus the W new entries,
query j of request b seeing KV positions <= prefix[b] + j (causal; MTP's mask rows only look
left), padding masked out. Same math, so the same tokens up to float rounding order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn.functional import scaled_dot_product_attention


class VerifyPlan(NamedTuple):
    """What every layer of one verify forward shares: the KV slots to read and the mask."""

    slots: torch.Tensor  # int64 [B * L]: request b's KV positions 0..L-1 (padding masked)
    mask: torch.Tensor  # bool [B, 1, W, L]: query j of request b sees positions <= prefix[b] + j
    batch: int
    kv_len: int


def verify_plan(req_to_token, rows, prefix_lens, width: int, max_kv_len: int = None) -> VerifyPlan:
    """The plan of a forward: rows [B] pool rows, prefix_lens [B] committed KV before the
    queries; ``max_kv_len``: max(prefix_lens) + W when known on the host."""
    B, W = rows.shape[0], width
    L = int(prefix_lens.max()) + W if max_kv_len is None else max_kv_len
    slots = req_to_token[rows, :L].reshape(-1).long()  # entries past a request's KV are masked
    pos = torch.arange(L, device=prefix_lens.device)
    last = prefix_lens.long()[:, None] + torch.arange(W, device=prefix_lens.device)[None, :]  # [B, W]
    return VerifyPlan(slots, (pos[None, None, :] <= last[:, :, None])[:, None], B, L)


def verify_attention(q, k_cache, v_cache, plan: VerifyPlan, scale: float):
    """Causal attention of W query tokens per request over its KV in the cache.

    q: [B*W, Hq, D] (request b's queries are rows b*W .. b*W+W-1, already in the cache at
    positions prefix_lens[b] .. prefix_lens[b]+W-1); k_cache / v_cache: [slots, Hkv, D(v)];
    plan: :func:`verify_plan`. Returns [B*W, Hq, Dv].
    """
    B, L = plan.batch, plan.kv_len
    Hq, D = q.shape[1], q.shape[2]
    W = q.shape[0] // B
    k = k_cache.index_select(0, plan.slots).view(B, L, k_cache.shape[1], k_cache.shape[2])
    v = v_cache.index_select(0, plan.slots).view(B, L, v_cache.shape[1], v_cache.shape[2])
    if k.dtype != q.dtype:
        k, v = k.to(q.dtype), v.to(q.dtype)
    out = scaled_dot_product_attention(
        q.view(B, W, Hq, D).transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        attn_mask=plan.mask, scale=scale, enable_gqa=Hq != k.shape[2],
    )  # [B, Hq, W, Dv]
    return out.transpose(1, 2).reshape(B * W, Hq, v.shape[-1])
