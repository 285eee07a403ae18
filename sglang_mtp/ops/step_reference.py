"""Plain-PyTorch definitions of the fused MTP step ops (:func:`~sglang_mtp.ops.step_inputs`,
:func:`~sglang_mtp.ops.accept_commit`).

Built on :mod:`sglang_mtp.step` (the reference decoder's semantics) plus the SGLang worker's
first-step rule: SGLang's prefill already emitted t1 (the argmax of the last prompt row), so
a request's FIRST decode step re-feeds the last prompt token x_{P-1} at position P-1
followed by masks. Its block is then exactly the reference decoder's first pass; the step
drops the block's first token (t1, already emitted), pins the next pending token 0 to the
prefill's t1 (the same argmax; pinning keeps the KV consistent with what the client saw even
on a floating-point near-tie), and writes query 0's KV to a scratch slot past the step's read
window (the prefill's slot may already be shared through the radix cache).
"""

from __future__ import annotations

import torch

from sglang_mtp import step


def step_k(k, pending_len, first, width: int, k_cap: int):
    """Each request's block size this step: k capped by ``k_cap`` and by the width (the block
    must fit after the pending tokens); a first step keeps 2 rows (row 0 re-predicts t1)."""
    lo = 1 + (first & (k > 1)).long()
    capped = torch.minimum(k.long().clamp(max=k_cap), width - pending_len.long() + 1)
    return torch.maximum(lo, capped)


def step_inputs_ref(pending, pending_len, draft_len, k, threshold, verify, first, rows, seq_lens,
                    req_to_token, mask_token_id: int, width: int, max_position: int, k_cap: int = 1 << 30):
    """Reference for :func:`sglang_mtp.ops.step_inputs` (same arguments and results)."""
    p = [t[rows] for t in (pending, pending_len, draft_len, k, threshold, verify, first)]
    pending_b, pending_len_b, draft_len_b, k_b, thr_b, verify_b, first_b = p
    k_b = step_k(k_b, pending_len_b, first_b, width, k_cap)
    seq_in = seq_lens - first_b.to(seq_lens.dtype)
    input_ids = step.propose(pending_b, pending_len_b, width, mask_token_id)
    slots = step.step_positions(seq_in, width)
    positions = slots.clamp(max=max_position - 1)
    loc = req_to_token[rows[:, None], slots].to(torch.int64)
    scratch = req_to_token[rows, seq_lens + width - 1].to(torch.int64)
    loc[:, 0] = torch.where(first_b, scratch, loc[:, 0])
    starts, block_len, block_thr = step.block_args(pending_len_b, draft_len_b, k_b, thr_b, verify_b, width)
    return input_ids, positions, seq_in, loc, starts, block_len, block_thr


def accept_commit_ref(tokens, accept_len, rows, seq_lens, pending, pending_len, draft_len, k, verify, first,
                      first_token, sampled, samples, mask_token_id: int, width: int, k_cap: int = 1 << 30):
    """Reference for :func:`sglang_mtp.ops.accept_commit` (writes the state rows in place)."""
    B, W = rows.shape[0], width
    dev = tokens.device
    tok = tokens.view(B, W).clone()
    pending_b, pending_len_b, draft_len_b = pending[rows], pending_len[rows], draft_len[rows]
    k_b, verify_b, first_b, first_token_b = k[rows], verify[rows], first[rows], first_token[rows]
    k_b = step_k(k_b, pending_len_b, first_b, W, k_cap)
    if samples is not None:  # sampler fallbacks decode one token: the sample replaces row 0
        base = (pending_len_b - 1 - draft_len_b).long()
        at = torch.arange(W, device=dev)[None, :] == base[:, None]
        tok = torch.where(at & sampled[rows][:, None], samples.long()[:, None], tok)
    out = step.accept_tokens(tok, accept_len, pending_b, pending_len_b, draft_len_b, k_b, verify_b,
                             mask_token_id, W)
    shift = first_b.to(torch.int64)
    col = torch.arange(W, device=dev)
    emit_len = out.emit_len.to(torch.int64) - shift
    emitted = out.emitted.gather(1, (col[None, :] + shift[:, None]).clamp(max=W - 1))
    emitted = torch.where(col[None, :] < emit_len[:, None], emitted, 0)
    next_pending = out.next_pending.clone()
    next_pending[:, 0] = torch.where(first_b, first_token_b, next_pending[:, 0])
    new_seq_lens = seq_lens + out.keep.to(seq_lens.dtype)
    kept = out.keep.to(torch.int64) - shift  # KV added beyond SGLang's committed length (commit.py)
    last = emitted.gather(1, (emit_len - 1).clamp(min=0)[:, None])[:, 0]
    base = (pending_len_b - 1 - draft_len_b).to(torch.int64) + shift  # logits row of emitted token 0
    emit_rows = torch.arange(B, device=dev)[:, None] * W + (base[:, None] + col[None, :]).clamp(max=W - 1)
    rel = col[None, :] - base[:, None]  # [B, W] index of each row's token inside the emission
    predict = torch.where((rel >= 0) & (rel < emit_len[:, None]),
                          emitted.gather(1, rel.clamp(0, W - 1)), 0).reshape(-1)
    pending[rows, :W] = next_pending
    pending_len[rows] = out.next_pending_len
    draft_len[rows] = out.next_draft_len
    first[rows] = False
    return (torch.cat([emitted, kept[:, None]], dim=1), emit_len.to(torch.int32), new_seq_lens, last,
            emit_rows, predict)
