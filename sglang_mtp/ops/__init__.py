"""The fused MTP ops: thin wrappers over the `sglang_mtp` torch operator library.

The torch dispatcher picks the CPU or CUDA kernel from the tensors' device. Every op has a
fake (meta) implementation, so it traces under ``torch.compile`` and records into CUDA graphs.
Their plain-torch definitions: :mod:`.reference` (the scan) and :mod:`.step_reference`
(the decode step; ``accept_commit`` is the partial KV commit: it keeps the real-token KV of
a step and discards the mask positions).

One MTP decode step of the SGLang worker is four calls, whatever the batch size::

    ids, pos, attn_lens, loc, start, length, tau = step_inputs(*state, rows, seq_lens, req_to_token, ...)
    logits = forward(ids, pos, attn_lens, loc)                       # [B*W, V]
    tokens, _, accept_len = confidence_scan(logits, start, length, tau, None, mask_id)
    emitted, emit_len, new_seq_lens, ... = accept_commit(tokens, accept_len, rows, attn_lens, *state, ...)
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import _C  # noqa: F401  (loads the shared object, which registers the ops)

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


def sample_scan(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id: int,
                inv_temperature, seed, position):
    """:func:`confidence_scan` where rows with ``inv_temperature > 0`` sample.

    Extra per-row arguments [R]: inv_temperature float32 (0 = greedy: the row keeps
    confidence_scan's argmax and confidence), seed int64 and position int64 (the absolute
    sequence position of the token the row predicts). A sampled row takes the Gumbel-max
    token of ``z = logits * inv_temperature`` with the counter-based noise of
    :func:`sglang_mtp.sampling.noise_uniform` (seed, position, token id) and reports
    ``softmax(z)`` at that token as its confidence; accept lengths follow as in
    confidence_scan. Entries already at -inf (e.g. removed by
    :func:`sglang_mtp.sampling.truncate`) are never sampled. Rows whose z has a +inf entry or
    no finite entry keep the greedy result. Semantics: :func:`.reference.sample_scan_ref`.
    """
    return _ops.sample_scan(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id,
                            inv_temperature, seed, position)


NO_CAP = 1 << 30  # a k_cap that caps nothing (blocks are at most MAX_K)


def step_inputs(pending, pending_len, draft_len, k, threshold, verify, first, rows, seq_lens, req_to_token,
                mask_token_id: int, width: int, max_position: int, k_cap: int = NO_CAP):
    """The W-wide forward's inputs and the scan's blocks for one MTP decode step.

    State (indexed by pool row, P rows): pending int64 [P, Pw] (tokens whose KV is not in the
    cache yet, ``pending_len`` int32 [P] of them, the last ``draft_len`` int32 [P] unverified
    drafts), k int32 [P] (block size / k_max), threshold float32 [P] (ConfAdapt tau), verify
    bool [P], first bool [P] (first decode step: re-run the prompt's last row). Batch: rows
    int64 [B] (pool rows), seq_lens int64 [B] (committed KV), req_to_token int32 [P', C].
    ``width`` W in [1, Pw]; positions are clamped to ``max_position - 1``. ``k_cap`` (>= 1)
    caps every request's block this step (load-adaptive width, :mod:`sglang_mtp.width`): its
    block is ``max(2 if first else 1, min(k, k_cap, W - pending_len + 1))`` rows.

    Returns input_ids, positions, out_cache_loc int64 [B, W]; attn_seq_lens int64 [B] (KV the
    forward attends to); block_start, block_len int32 [B] and block_threshold float32 [B] for
    :func:`confidence_scan`. Semantics: :func:`.step_reference.step_inputs_ref`.
    """
    return _ops.step_inputs(pending, pending_len, draft_len, k, threshold, verify, first, rows, seq_lens,
                            req_to_token, mask_token_id, width, max_position, k_cap)


def accept_commit(tokens, accept_len, rows, seq_lens, pending, pending_len, draft_len, k, verify, first,
                  first_token, sampled, samples, mask_token_id: int, width: int, k_cap: int = NO_CAP):
    """Accept one step's tokens and commit them: outputs for SGLang, next state in place.

    tokens int64 [B*W] and accept_len int32 [B]: :func:`confidence_scan` of the step's logits
    over :func:`step_inputs`' blocks; seq_lens: the step's attn_seq_lens int64 [B]; state as in
    :func:`step_inputs` plus first_token int64 [P] (the prefill's token) and sampled bool [P]
    (sampler fallbacks, whose token is ``samples`` int64 [B], or None when there are none).
    ``k_cap``: the same as the step's :func:`step_inputs` (verify's next drafts are the capped
    block's mask rows).
    Writes ``pending``, ``pending_len``, ``draft_len`` and ``first`` of the batch's rows.

    Returns emitted int64 [B, W+1] (tokens, 0 padded; last column = KV kept beyond SGLang's
    committed length), emit_len int32 [B], new_seq_lens int64 [B] (committed KV after the
    step), last_token int64 [B], emit_rows int64 [B, W] (logits row of each emitted token) and
    predict int64 [B*W] (the token emitted at each logits row, else 0). Semantics:
    :func:`.step_reference.accept_commit_ref`.
    """
    return _ops.accept_commit(tokens, accept_len, rows, seq_lens, pending, pending_len, draft_len, k, verify,
                              first, first_token, sampled, samples, mask_token_id, width, k_cap)


OPS = ("confidence_scan", "sample_scan", "step_inputs", "accept_commit")


def has_cuda_kernels() -> bool:
    """Whether this build registered the CUDA kernels (independent of a GPU being present)."""
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"sglang_mtp::{name}", "CUDA") for name in OPS)


@torch.library.register_fake("sglang_mtp::confidence_scan")
def _confidence_scan_fake(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id):
    R, B = logits.shape[0], block_start.shape[0]
    return (
        logits.new_empty((R,), dtype=torch.int64),
        logits.new_empty((R,), dtype=torch.float32),
        logits.new_empty((B,), dtype=torch.int32),
    )


@torch.library.register_fake("sglang_mtp::sample_scan")
def _sample_scan_fake(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id, inv_temperature,
                      seed, position):
    return _confidence_scan_fake(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id)


@torch.library.register_fake("sglang_mtp::step_inputs")
def _step_inputs_fake(pending, pending_len, draft_len, k, threshold, verify, first, rows, seq_lens, req_to_token,
                      mask_token_id, width, max_position, k_cap):
    B = rows.shape[0]
    i64 = dict(dtype=torch.int64)
    return (rows.new_empty((B, width), **i64), rows.new_empty((B, width), **i64), rows.new_empty((B,), **i64),
            rows.new_empty((B, width), **i64), rows.new_empty((B,), dtype=torch.int32),
            rows.new_empty((B,), dtype=torch.int32), rows.new_empty((B,), dtype=torch.float32))


@torch.library.register_fake("sglang_mtp::accept_commit")
def _accept_commit_fake(tokens, accept_len, rows, seq_lens, pending, pending_len, draft_len, k, verify, first,
                        first_token, sampled, samples, mask_token_id, width, k_cap):
    B = rows.shape[0]
    i64 = dict(dtype=torch.int64)
    return (rows.new_empty((B, width + 1), **i64), rows.new_empty((B,), dtype=torch.int32),
            rows.new_empty((B,), **i64), rows.new_empty((B,), **i64), rows.new_empty((B, width), **i64),
            rows.new_empty((B * width,), **i64))
