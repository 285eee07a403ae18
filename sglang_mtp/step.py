"""One MTP decoding step on padded batch tensors: build the pass input, then accept.

API (all tensors on the model's device; B requests, no host sync, no loop over requests):

    input_ids = propose(pending, pending_len, width, mask_token_id)          # [B, W]
    pos = step_positions(seq_lens, width)                                     # [B, W]
    # ... one forward over B*W query rows (request b = rows b*W .. b*W+W-1,
    #     query j of request b at position seq_lens[b] + j) -> logits [B*W, V]
    out = accept(logits, pending, pending_len, draft_len, k, threshold, verify,
                 mask_token_id, max_k, stop_token_ids=None, budget=None)
    # out.emitted [B, max_k] int64 (-1 padded), out.emit_len [B] int32 (>= 1 unless budget 0),
    # out.keep [B] int32: commit the KV of query positions 0..keep-1, discard the rest,
    # out.next_pending [B, max_k] int64 (mask padded), out.next_pending_len [B] int32,
    # out.next_draft_len [B] int32, out.finished [B] bool (stop token emitted / budget spent).
    k, threshold, verify = strategy_tensors(strategies, device)              # host, once

State per request (method.md, common.md "Decoding step semantics"):
- ``pending [B, P]`` (+ ``pending_len``): tokens whose KV is not in the cache yet; fed first.
  First pass: the prompt. ``seq_lens``: committed KV length (= position of pending[0]).
- ``draft_len [B]``: how many trailing pending tokens are unverified drafts (verify only;
  0 for lossy strategies and on the first pass).
- ``k [B]``: block size / k_max (the pass appends k-1 masks); ``threshold [B]``: ConfAdapt
  tau (0 = static); ``verify [B]`` bool: lossless mode.
Requirements: ``W >= pending_len + k - 1`` for every request (extra query positions are
padding masks: causal attention makes them harmless, and their KV is discarded);
``max_k >= max(k)``; P may differ from W. Mask KV is never kept.
Lossy: the block is the last pending row plus the k-1 mask rows, accepted by
``ops.confidence_scan``; all pending KV is kept; next pending = the accepted tokens.
Verify: g_i = argmax at the row of pending token i (from the last verified one); drafts are
kept while they equal g_{i-1}; emitted = g_0..g_j; next pending = [g_j] + (the k-1 mask-row
argmaxes as new drafts when every draft was accepted).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sglang_mtp.ops import confidence_scan, sample_scan
from sglang_mtp.sampling import per_row, row_params, truncate


class StepOutput(NamedTuple):
    emitted: torch.Tensor  # int64 [B, max_k], -1 after emit_len
    emit_len: torch.Tensor  # int32 [B]
    keep: torch.Tensor  # int32 [B], KV entries of this pass to commit (a prefix of the W)
    next_pending: torch.Tensor  # int64 [B, max_k], mask id after next_pending_len
    next_pending_len: torch.Tensor  # int32 [B]
    next_draft_len: torch.Tensor  # int32 [B]
    finished: torch.Tensor  # bool [B]


def propose(pending, pending_len, width: int, mask_token_id: int):
    """Pass input: each request's pending tokens, then masks up to ``width``.

    pending: int [B, P]; pending_len: int [B]. Returns int64 [B, width]. The masks after the
    first k-1 are padding that keeps one shape for the whole batch.
    """
    B, P = pending.shape
    j = torch.arange(width, device=pending.device)  # [W]
    vals = pending.gather(1, j.clamp(max=P - 1).expand(B, width)).long()  # [B, W]
    return torch.where(j < pending_len[:, None], vals, torch.full_like(vals, mask_token_id))


def step_positions(seq_lens, width: int):
    """Position ids of the pass: consecutive from each request's committed KV length. [B, W]"""
    return seq_lens.long()[:, None] + torch.arange(width, device=seq_lens.device)


def accept(logits, pending, pending_len, draft_len, k, threshold, verify, mask_token_id: int, max_k: int,
           stop_token_ids=None, budget=None, sampling=None, seq_lens=None) -> StepOutput:
    """Accept the tokens of one pass (see the module docstring for every argument).

    logits: [B*W, V] (row b*W + j = after query j of request b); stop_token_ids: int64 [S];
    budget: int [B] tokens each request may still emit (None = unlimited). sampling: a
    :class:`~sglang_mtp.sampling.RowSampling` for batches with sampled requests, with
    seq_lens [B] (the pass's first query position): every row then draws the token of the
    position it predicts (:mod:`sglang_mtp.sampling`), and the accept rule is unchanged.
    """
    B = pending.shape[0]
    W = logits.shape[0] // B
    starts, block_len, thr = block_args(pending_len, draft_len, k, threshold, verify, W)
    if stop_token_ids is not None:
        stop_token_ids = stop_token_ids.to(device=logits.device, dtype=torch.int64)
    if sampling is None:
        tokens, _, scan_len = confidence_scan(
            logits, starts, block_len, thr, stop_token_ids, suppress_token_id=mask_token_id
        )
    elif seq_lens is None:
        raise ValueError("accept(sampling=...) needs seq_lens (the position of each request's first query)")
    else:
        tokens, scan_len = sample_tokens(logits, starts, block_len, thr, stop_token_ids, mask_token_id, sampling,
                                         seq_lens + 1, W)
    return accept_tokens(tokens.view(B, W), scan_len, pending, pending_len, draft_len, k, verify,
                         mask_token_id, max_k, stop_token_ids, budget)


def sample_tokens(logits, starts, block_len, thr, stop_token_ids, mask_token_id: int, sampling, first_position,
                  width: int):
    """``sample_scan`` over a pass whose row j of request b predicts ``first_position[b] + j``:
    (tokens int64 [B*W], accept_len int32 [B]). Truncates first when a request asks for it."""
    inv_t, seed, pos = row_params(sampling, width, first_position)
    if sampling.truncates:
        logits = truncate(logits, inv_t, per_row(sampling.top_k, width), per_row(sampling.top_p, width),
                          per_row(sampling.min_p, width), mask_token_id).contiguous()
    tokens, _, scan_len = sample_scan(logits, starts, block_len, thr, stop_token_ids, mask_token_id, inv_t, seed,
                                      pos)
    return tokens, scan_len


def block_args(pending_len, draft_len, k, threshold, verify, width: int):
    """The ``confidence_scan`` block of each request: (block_start int32 [B], block_len
    int32 [B], threshold float32 [B]). The block starts at the row of the last verified token;
    verify blocks are its drafts (threshold 0: the scan only finds their argmaxes)."""
    B = pending_len.shape[0]
    base = pending_len.long() - 1 - draft_len.long()  # [B]
    block_len = torch.where(verify, draft_len.long() + 1, k.long())
    thr = torch.where(verify, torch.zeros_like(threshold), threshold).float()
    starts = torch.arange(B, device=pending_len.device) * width + base
    return starts.int(), block_len.int(), thr


def accept_tokens(tok, scan_len, pending, pending_len, draft_len, k, verify, mask_token_id: int, max_k: int,
                  stop_token_ids=None, budget=None) -> StepOutput:
    """The accept rule on the scan's results: ``tok`` int64 [B, W] argmax of every query row,
    ``scan_len`` int32 [B] the scan's accept length of each block (see :func:`accept`)."""
    pending_len, draft_len, k = pending_len.long(), draft_len.long(), k.long()
    base = pending_len - 1 - draft_len  # [B] query row of the last verified token
    j = _accepted_drafts(tok, pending, base, draft_len, max_k) * verify  # [B]
    emit_len = torch.where(verify, torch.minimum(j + 1, scan_len.long()), scan_len.long())
    if budget is not None:
        emit_len = torch.minimum(emit_len, budget.long().clamp(min=0))
    emitted = _window(tok, base, emit_len, max_k, -1)
    # Lossy: next pending = the accepted block. Verify: [g_j] plus fresh drafts (the rows
    # right after g_j's row are the mask rows) only when no draft was rejected.
    next_len = torch.where(verify, 1 + torch.where(j == draft_len, k - 1, 0), emit_len)
    next_pending = _window(tok, base + j, next_len, max_k, mask_token_id)
    finished = emit_len == 0
    if stop_token_ids is not None and stop_token_ids.numel() > 0:
        finished |= torch.isin(emitted, stop_token_ids).any(1)
    if budget is not None:
        finished |= emit_len >= budget.long()
    return StepOutput(
        emitted, emit_len.int(), (pending_len - draft_len + j).int(), next_pending, next_len.int(),
        torch.where(verify, next_len - 1, 0).int(), finished,
    )


def _accepted_drafts(tok, pending, base, draft_len, max_k):
    # Number of leading drafts d_1.. that equal the argmax of the row before them. [B]
    B, P = pending.shape
    W = tok.shape[1]
    i = torch.arange(max(max_k - 1, 1), device=tok.device)  # [K-1]
    drafts = pending.gather(1, (base[:, None] + 1 + i).clamp(max=P - 1)).long()  # [B, K-1]
    g = tok.gather(1, (base[:, None] + i).clamp(max=W - 1))  # [B, K-1]
    ok = (drafts == g) & (i < draft_len[:, None])
    return ok.long().cumprod(1).sum(1)


def _window(tok, start, length, width: int, fill: int):
    # tok[b, start[b] : start[b] + length[b]] left-aligned in [B, width], padded with fill.
    e = torch.arange(width, device=tok.device)
    vals = tok.gather(1, (start[:, None] + e).clamp(max=tok.shape[1] - 1))
    return torch.where(e < length[:, None], vals, torch.full_like(vals, fill))


def strategy_tensors(strategies, device=None):
    """Per-request ``k`` int32 [B], ``threshold`` float32 [B], ``verify`` bool [B]."""
    k = torch.tensor([s.k for s in strategies], dtype=torch.int32, device=device)
    thr = torch.tensor([s.scan_threshold for s in strategies], dtype=torch.float32, device=device)
    ver = torch.tensor([s.is_verify for s in strategies], dtype=torch.bool, device=device)
    return k, thr, ver
