"""The fused MTP ops: thin wrappers over the `sglang_mtp` torch operator library.

The torch dispatcher picks the CPU or CUDA kernel from the tensors' device. Both ops have fake
(meta) implementations, so they trace under ``torch.compile`` and record into CUDA graphs.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _C  # noqa: F401  (loads the shared object, which registers the ops)

_ops = torch.ops.sglang_mtp


def confidence_scan(
    logits: torch.Tensor,
    block_start: torch.Tensor,
    block_len: torch.Tensor,
    threshold: torch.Tensor,
    stop_token_ids: Optional[torch.Tensor] = None,
    suppress_token_id: int = -1,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-1 token and probability per logits row, and the ConfAdapt accept length per block.

    Args:
        logits: [R, V] float32 / bfloat16 / float16, contiguous.
        block_start, block_len: int32 [B]; request b owns rows
            ``block_start[b] .. block_start[b] + block_len[b] - 1`` (non-overlapping, len >= 1).
        threshold: float32 [B] in [0, 1]; 0 accepts the whole block (static k).
        stop_token_ids: int64 [S] or None; the accepted run ends at the first stop token (kept).
        suppress_token_id: a token id never predicted (the ``<MTP>`` mask id); -1 for none.

    Returns:
        tokens int64 [R] (argmax, lowest index wins ties), confidence float32 [R]
        (softmax probability of that token), accept_len int32 [B]
        (``max(1, leading run of rows with confidence >= threshold)``, cut at a stop token).

    NaN logits count as -inf. A row with +inf entries picks its first +inf with confidence
    1 / (number of +inf). A row with nothing above -inf gives the lowest unsuppressed id with
    confidence 0. Token ids are always in [0, V) and confidences in [0, 1].
    """
    return _ops.confidence_scan(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id)


def kv_commit(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    cache_loc: torch.Tensor,
    keep: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Commit the real-token KV of an MTP forward and release the mask-position slots.

    Args:
        req_to_token: int32 [P, C], SGLang's token-position -> KV-slot table (written in place).
        req_pool_indices: int64 [B], distinct rows of ``req_to_token``.
        seq_lens: int64 [B], committed positions per request.
        cache_loc: int64 [B, W], the slots the forward wrote for each request's W queries.
        keep: int32 [B] in [0, W], how many leading queries hold real-token KV.

    Sets ``req_to_token[req_pool_indices[b], seq_lens[b] + j] = cache_loc[b, j]`` for
    ``j < keep[b]`` and leaves every other entry untouched.

    Returns:
        new_seq_lens int64 [B] (= seq_lens + keep), released int64 [B * W] (the slots
        ``cache_loc[b, j]`` with ``j >= keep[b]`` in (b, j) order, then -1 padding) and
        num_released int64 [] (how many leading entries of ``released`` are slots).
    """
    return _ops.kv_commit(req_to_token, req_pool_indices, seq_lens, cache_loc, keep)


def has_cuda_kernels() -> bool:
    """Whether this build registered the CUDA kernels (independent of a GPU being present)."""
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"sglang_mtp::{name}", "CUDA")
        for name in ("confidence_scan", "kv_commit")
    )


@torch.library.register_fake("sglang_mtp::confidence_scan")
def _confidence_scan_fake(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id):
    R, B = logits.shape[0], block_start.shape[0]
    return (
        logits.new_empty((R,), dtype=torch.int64),
        logits.new_empty((R,), dtype=torch.float32),
        logits.new_empty((B,), dtype=torch.int32),
    )


@torch.library.register_fake("sglang_mtp::kv_commit")
def _kv_commit_fake(req_to_token, req_pool_indices, seq_lens, cache_loc, keep):
    B, W = cache_loc.shape
    return (
        seq_lens.new_empty((B,)),
        cache_loc.new_empty((B * W,)),
        cache_loc.new_empty(()),
    )
