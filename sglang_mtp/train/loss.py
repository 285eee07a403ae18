"""Student-forced self-distillation objective (method.md, "Training").

One training step on a packed :class:`~sglang_mtp.train.layout.Batch`:

1. propose: the student reads the layout (masks in the spans) and its greedy block is
   y' = argmax of the k rows of each region;
2. score: the frozen teacher reads the same layout with each mask slot replaced by the
   student's token proposed at the row before it (mask j holds y'_j), so the teacher row at
   block position j is P_T(. | x_<=i, y'_1 .. y'_j) (the chain rule on the true prefix, all
   regions of the batch in one forward thanks to the blocked attention);
3. loss per block row: "hard" = cross-entropy against the teacher's argmax t (the paper's
   main setting), "soft" = cross-entropy against the teacher distribution; summed over the
   k rows of a region, averaged over regions.

Reported loss value: the teacher's own term is added back (log P_T(t) for hard, the
teacher entropy for soft; it carries no gradient), so the number is a divergence that is
exactly 0 when the student equals the teacher (the step-0, k = 1 sanity check); gradients
are the paper's.

EOS (see :func:`block_targets`): a proposed EOS that the teacher endorsed ends the block
(later rows target EOS, as decoding stops there); rows after an EOS the teacher did not
predict are dropped. The mask id is never a proposal, a target, or part of a distribution
(the decoder suppresses it too).

Optional auxiliary term (a deviation from the paper's best setting, off by default):
``ntp_weight * KL(P_T || P_S)`` averaged over the supervised ground-truth rows. Those rows
see only ground truth, so this is next-token self-distillation that protects the model's
ordinary next-token predictions while the mask rows learn (matters for tiny models).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layout import MASK, Batch, hf_attention_mask


@dataclass
class LossOutput:
    """Loss (with grad) and detached statistics of one micro-batch."""

    loss: torch.Tensor          # total objective (what backward() sees)
    mtp: float                  # student-forced term (divergence form, 0 when S == T)
    ntp: float                  # auxiliary next-token KL on ground-truth rows (always measured)
    agree_block: float          # fraction of block rows where student argmax == teacher target
    agree_mask: float           # same, mask rows only (the multi-token part)
    n_block: int
    n_mask: int


def argmax_excluding(logits, token_id=None) -> torch.Tensor:
    """argmax over the last dim, never returning ``token_id`` (the mask id, as at inference)."""
    if token_id is None:
        return logits.argmax(-1)
    top2 = logits.topk(2, dim=-1).indices
    return torch.where(top2[..., 0] == token_id, top2[..., 1], top2[..., 0])


def teacher_input_ids(student_logits, batch: Batch, suppress_token_id=None) -> torch.Tensor:
    """Teacher input: the layout with mask slot j holding the student's argmax of row j-1.

    student_logits: [B, n, V] -> ids [B, n]. A mask slot directly follows the row before it
    in its span (the prefix row or the previous mask), so a shift by one finds it.
    """
    proposed = argmax_excluding(student_logits, suppress_token_id)   # [B, n]
    shifted = torch.cat([proposed[:, :1], proposed[:, :-1]], dim=1)
    return torch.where(batch.kind == MASK, shifted, batch.input_ids)


def _span_cumsum(flags, batch: Batch) -> torch.Tensor:
    """Per block row: how many ``flags`` lie after its prefix row, up to and including it."""
    cum = flags.long().cumsum(1)
    idx = torch.arange(cum.shape[1], device=cum.device).expand_as(cum)
    prefix_idx = torch.where(batch.block_j >= 0, idx - batch.block_j, idx)
    return cum - cum.gather(1, prefix_idx)


def block_targets(teacher_logits, teacher_ids, batch: Batch, eos_token_id=None,
                  suppress_token_id=None):
    """Hard targets [B, n] plus ``forced`` and ``valid`` row flags [B, n].

    target = the teacher's argmax (mask id excluded). EOS rule inside a block: at the first
    proposed EOS, if the teacher endorsed it (its target at the row before was EOS) the
    block has ended, so every row from there targets EOS (``forced``); if not, the rest of
    the block conditions on a wrong end of text and is dropped (``valid`` False): forcing
    EOS there would reward the student for ending early and collapses training.
    """
    target = argmax_excluding(teacher_logits, suppress_token_id)
    valid = batch.block_row.clone()
    if eos_token_id is None:
        return target, torch.zeros_like(valid), valid
    eos_in = (batch.kind == MASK) & (teacher_ids == eos_token_id)
    prev_target = torch.cat([target[:, :1], target[:, :-1]], dim=1)
    seen = _span_cumsum(eos_in, batch)
    first = eos_in & (seen == 1)
    endorsed = _span_cumsum(first & (prev_target == eos_token_id), batch) > 0
    after = (seen > 0) & (batch.block_j > 0)
    forced = after & endorsed
    target = torch.where(forced, torch.full_like(target, eos_token_id), target)
    return target, forced, valid & ~(after & ~endorsed)


def _log_probs(logits, suppress_token_id=None) -> torch.Tensor:
    """float32 log-softmax [rows, V] with the mask id removed from the distribution."""
    logits = logits.float()
    if suppress_token_id is not None:
        logits = logits.index_fill(-1, torch.tensor([suppress_token_id], device=logits.device),
                                   -torch.inf)
    return F.log_softmax(logits, -1)


def _row_losses(s_logp, t_logp, target, kind, forced):
    """Per-row loss in divergence form: [rows]."""
    if kind == "hard":
        # A forced (EOS-rule) target is a one-hot distribution: its own term is log 1 = 0.
        t_term = torch.where(forced, 0.0, t_logp.gather(-1, target[:, None])[:, 0])
        s_term = s_logp.gather(-1, target[:, None])[:, 0]
        return t_term - s_term
    # Soft: the teacher distribution, except one-hot EOS where the EOS rule forces it.
    p = torch.where(forced[:, None], F.one_hot(target, t_logp.shape[-1]).to(t_logp), t_logp.exp())
    return (torch.xlogy(p, p) - torch.where(p > 0, p * s_logp, 0.0)).sum(-1)


def mtp_objective(student_logits, teacher_logits, teacher_ids, batch: Batch, *, kind="hard",
                  eos_token_id=None, ntp_weight=0.0, suppress_token_id=None) -> LossOutput:
    """The loss of one micro-batch from both models' logits ([B, n, V] each)."""
    if kind not in ("hard", "soft"):
        raise ValueError(f"kind must be 'hard' or 'soft', got {kind!r}")
    target, forced, valid = block_targets(teacher_logits, teacher_ids, batch, eos_token_id,
                                          suppress_token_id)
    s_logp = _log_probs(student_logits[valid], suppress_token_id)   # [rows, V]
    t_logp = _log_probs(teacher_logits[valid], suppress_token_id)
    rows = _row_losses(s_logp, t_logp, target[valid], kind, forced[valid])
    mtp = rows.sum() / max(int(batch.n_regions), 1)
    ntp = _ntp_kl(student_logits, teacher_logits, batch, suppress_token_id)
    loss = mtp + ntp_weight * ntp if ntp_weight else mtp
    agree = s_logp.argmax(-1) == target[valid]
    is_mask = batch.kind[valid] == MASK
    return LossOutput(
        loss=loss, mtp=float(mtp.detach()), ntp=float(ntp.detach()),
        agree_block=float(agree.float().mean()) if agree.numel() else 0.0,
        agree_mask=float(agree[is_mask].float().mean()) if is_mask.any() else 0.0,
        n_block=int(agree.numel()), n_mask=int(is_mask.sum()))


def _ntp_kl(student_logits, teacher_logits, batch: Batch, suppress_token_id=None):
    """Mean KL(P_T || P_S) over supervised ground-truth rows (0 if there are none)."""
    rows = batch.supervised
    if not bool(rows.any()):
        return student_logits.sum() * 0.0
    s_logp = _log_probs(student_logits[rows], suppress_token_id)
    t_logp = _log_probs(teacher_logits[rows], suppress_token_id)
    p = t_logp.exp()
    return (torch.xlogy(p, p) - torch.where(p > 0, p * s_logp, 0.0)).sum(-1).mean()


def forward_logits(model, batch: Batch, input_ids=None) -> torch.Tensor:
    """Logits [B, n, V] of an HF causal LM on the packed layout (4-D mask, explicit positions)."""
    ids = batch.input_ids if input_ids is None else input_ids
    mask = hf_attention_mask(batch.allowed, model)
    return model(input_ids=ids, attention_mask=mask, position_ids=batch.position_ids,
                 use_cache=False).logits


def mtp_loss(student, teacher, batch: Batch, *, kind="hard", eos_token_id=None,
             ntp_weight=0.0, mask_token_id=None) -> LossOutput:
    """Student forward (with grad), teacher forward (no grad), objective. See module doc.

    ``mask_token_id`` is excluded from proposals, targets and both distributions, exactly
    as the decoder suppresses it.
    """
    student_logits = forward_logits(student, batch)
    teacher_ids = teacher_input_ids(student_logits.detach(), batch, mask_token_id)
    with torch.no_grad():
        teacher_logits = forward_logits(teacher, batch, teacher_ids)
    return mtp_objective(student_logits, teacher_logits, teacher_ids, batch, kind=kind,
                         eos_token_id=eos_token_id, ntp_weight=ntp_weight,
                         suppress_token_id=mask_token_id)
