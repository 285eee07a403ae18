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

import torch
from torch.nn.functional import scaled_dot_product_attention


def verify_attention(q, k_cache, v_cache, req_to_token, rows, prefix_lens, width: int, scale: float,
                     max_kv_len: int = None):
    """Causal attention of W query tokens per request over its KV in the cache.

    q: [B*W, Hq, D] (request b's queries are rows b*W .. b*W+W-1, already in the cache at
    positions prefix_lens[b] .. prefix_lens[b]+W-1); k_cache / v_cache: [slots, Hkv, D(v)];
    req_to_token: [pool, C] slot of each (request row, position); rows: [B] pool rows;
    prefix_lens: [B] committed KV before the queries; ``max_kv_len``: max(prefix_lens) + W
    when the caller knows it on the host (avoids a device read). Returns [B*W, Hq, Dv].
    """
    B = rows.shape[0]
    W = width
    Hq, D = q.shape[1], q.shape[2]
    if max_kv_len is None:
        max_kv_len = int(prefix_lens.max()) + W
    L = max_kv_len
    slots = req_to_token[rows, :L].long()  # [B, L]; entries past a request's KV are masked
    k = k_cache[slots]  # [B, L, Hkv, D]
    v = v_cache[slots]
    if k.dtype != q.dtype:
        k, v = k.to(q.dtype), v.to(q.dtype)
    pos = torch.arange(L, device=q.device)
    last = prefix_lens.long()[:, None] + torch.arange(W, device=q.device)[None, :]  # [B, W]
    mask = pos[None, None, :] <= last[:, :, None]  # [B, W, L]
    out = scaled_dot_product_attention(
        q.view(B, W, Hq, D).transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        attn_mask=mask[:, None], scale=scale, enable_gqa=Hq != k.shape[2],
    )  # [B, Hq, W, Dv]
    return out.transpose(1, 2).reshape(B * W, Hq, v.shape[-1])
