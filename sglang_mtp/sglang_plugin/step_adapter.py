"""Translate one SGLang decode step to :mod:`sglang_mtp.step` (the reference semantics).

The reference decoder's first pass is prompt + (k-1) masks, with the block starting at the
last prompt row. SGLang's prefill already emitted t1 (the argmax of that row), so a
request's FIRST decode step re-feeds the last prompt token x_{P-1} at position P-1 followed
by masks: its block is again [x_{P-1} row, mask rows], i.e. exactly the reference's first
pass, and ``step.accept`` applies unchanged. The adapter then

- drops the block's first emitted token (t1, already emitted by the prefill) and pins the
  next pending token 0 to the prefill's t1 (the two are the same argmax; pinning keeps the
  KV consistent with what the client saw even on a floating-point near-tie);
- keeps x_{P-1}'s KV where the prefill wrote it: query 0 of such a request writes to a
  scratch slot (a reserved slot past the step's read window), because the prefill's slot may
  already be shared through the radix cache.

No host sync, no per-request loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sglang_mtp import step


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [B, W] int64
    positions: torch.Tensor  # [B, W] int64
    seq_lens: torch.Tensor  # [B] committed KV the forward attends to (P-1 for first steps)
    out_cache_loc: torch.Tensor  # [B, W] int64 KV slots the W queries write


@dataclass
class StepResult:
    emitted: torch.Tensor  # [B, W+1] int64: emitted tokens (0 padded), last column = keep
    emit_len: torch.Tensor  # [B] int32
    new_seq_lens: torch.Tensor  # [B] committed KV after the step
    last_token: torch.Tensor  # [B] int64 last emitted token (FutureMap bonus slot)
    emit_rows: torch.Tensor  # [B, W] int64 logits row of each emitted token (for logprobs)
    predict: torch.Tensor  # [B * W] int64 emitted token at its logits row


def build_inputs(st, rows, seq_lens, req_to_token, mask_id: int, width: int, max_position: int) -> StepInputs:
    """The W-wide forward of requests ``rows`` (state ``st`` is :class:`~.state.Gathered`).

    Near the end of the context, trailing padding masks would sit past the model's last
    position (SGLang's RoPE table ends there): their position ids are clamped. Only rows
    after every row that can still be emitted are affected, and causal attention keeps
    them from touching earlier rows.
    """
    first = st.first.to(seq_lens.dtype)
    seq_in = seq_lens - first
    input_ids = step.propose(st.pending, st.pending_len, width, mask_id)
    slots = step.step_positions(seq_in, width)
    positions = slots.clamp(max=max_position - 1)
    loc = req_to_token[rows[:, None], slots].to(torch.int64)
    scratch = req_to_token[rows, seq_lens + width - 1].to(torch.int64)
    loc[:, 0] = torch.where(st.first, scratch, loc[:, 0])
    return StepInputs(input_ids, positions, seq_in, loc)


def accept(logits, st, inputs: StepInputs, mask_id: int, width: int, sampled_tokens=None):
    """Run ``step.accept`` and fold in the first-step rule. Returns (StepResult, next state).

    ``sampled_tokens`` [B]: SGLang's sample from row 0 for fallback requests (``st.sampled``,
    always plain decoding), replacing their argmax.
    """
    logits = logits.contiguous()  # the verify forward may return a strided view
    out = step.accept(logits, st.pending, st.pending_len, st.draft_len, st.k, st.threshold,
                      st.verify, mask_id, width)
    if sampled_tokens is not None:
        out = _use_samples(out, st.sampled, sampled_tokens.to(torch.int64))
    first = st.first
    shift = first.to(torch.int64)
    col = torch.arange(width, device=logits.device)
    emit_len = out.emit_len.to(torch.int64) - shift
    emitted = out.emitted.gather(1, (col[None, :] + shift[:, None]).clamp(max=width - 1))
    emitted = torch.where(col[None, :] < emit_len[:, None], emitted, 0)
    next_pending = out.next_pending.clone()
    next_pending[:, 0] = torch.where(first, st.first_token, next_pending[:, 0])
    new_seq_lens = inputs.seq_lens + out.keep.to(inputs.seq_lens.dtype)
    # KV really added this step, relative to SGLang's committed length (see commit.py).
    kept = (new_seq_lens - (inputs.seq_lens + shift.to(inputs.seq_lens.dtype))).to(torch.int64)
    last = emitted.gather(1, (emit_len - 1).clamp(min=0)[:, None])[:, 0]
    # Logits row of emitted token e: the block's base row (+1 past t1 in a first step) + e.
    base = (st.pending_len - 1 - st.draft_len).to(torch.int64) + shift
    B = emitted.shape[0]
    rows = (base[:, None] + col[None, :]).clamp(max=width - 1)
    emit_rows = torch.arange(B, device=col.device)[:, None] * width + rows
    rel = col[None, :] - base[:, None]  # [B, W] position of each row inside the emission
    predict = torch.where((rel >= 0) & (rel < emit_len[:, None]),
                          emitted.gather(1, rel.clamp(0, width - 1)), 0).reshape(-1)
    result = StepResult(torch.cat([emitted, kept[:, None]], dim=1), emit_len.to(torch.int32),
                        new_seq_lens, last, emit_rows, predict)
    return result, (next_pending, out.next_pending_len, out.next_draft_len)


def _use_samples(out, sampled, samples):
    # Fallback requests decode one token per step (k == 1): it is emitted[:, 0] and, as the
    # next input, next_pending[:, 0].
    emitted = out.emitted.clone()
    emitted[:, 0] = torch.where(sampled, samples, emitted[:, 0])
    next_pending = out.next_pending.clone()
    next_pending[:, 0] = torch.where(sampled, samples, next_pending[:, 0])
    return out._replace(emitted=emitted, next_pending=next_pending)
