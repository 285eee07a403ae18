"""The MTP self-distillation training loop (student vs. a frozen copy of its initial weights).

:func:`train` is the library entry point (models already in memory);
:func:`sglang_mtp.train.cli.train_main` is the ``sglang-mtp train`` command on checkpoints.
AdamW (torch defaults), linear warm-up then a constant learning
rate (the paper's schedule), gradient accumulation, gradient clipping, bf16 autocast on
CUDA, a progress bar with the loss and the student/teacher agreement, periodic HF-format
checkpoints (``config.mtp_trained = True`` and the mask id recorded) and exact resume
(step, optimizer, data order and layout randomness are all functions of the step).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass

import torch

from .data import batch_indices
from .layout import collate, pack_sequence
from .loss import mtp_loss


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (defaults: the paper's, except steps and batch)."""

    steps: int = 1000
    lr: float = 1e-5
    warmup_steps: int = 100
    schedule: str = "constant"     # after warm-up: "constant" (the paper) or "cosine" (to 10%)
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 160
    k_max: int = 16
    k_min: int = 2
    stride: int | None = None      # ground-truth tokens between regions (default k_max)
    regions: int | None = None     # regions per sequence (default seq_len // (2 * k_max))
    loss: str = "hard"             # "hard" | "soft"
    ntp_weight: float = 0.0        # auxiliary next-token KL on ground-truth rows
    weight_decay: float = 0.01     # torch's AdamW default (the paper: torch defaults)
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 0            # steps between checkpoints (0: only the final one)
    log_every: int = 10

    def validate(self):
        """Raise ValueError naming the first bad field."""
        checks = [("steps", self.steps >= 1), ("lr", self.lr > 0),
                  ("warmup_steps", self.warmup_steps >= 0), ("batch_size", self.batch_size >= 1),
                  ("grad_accum", self.grad_accum >= 1), ("k_max", self.k_max >= 1),
                  ("k_min", 1 <= self.k_min <= self.k_max),
                  ("seq_len", self.seq_len >= 2 * self.k_max),
                  ("loss", self.loss in ("hard", "soft")), ("ntp_weight", self.ntp_weight >= 0),
                  ("schedule", self.schedule in ("constant", "cosine"))]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"bad training config: {name}={getattr(self, name)!r}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``cfg.lr`` over ``warmup_steps``, then constant (or cosine to 10%)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    return cfg.lr


def make_batch(examples, start, cfg: TrainConfig, mask_token_id, eos_token_id, pad_token_id=0):
    """Pack ``cfg.batch_size`` examples starting at global sample index ``start``."""
    packed = []
    for pos, idx in enumerate(batch_indices(len(examples), start, cfg.batch_size, cfg.seed),
                              start):
        ex = examples[idx]
        rng = random.Random(cfg.seed * 1_000_003 + pos)  # layout randomness fixed per sample
        packed.append(pack_sequence(
            ex.ids, mask_token_id, prompt_len=ex.prompt_len, eos_token_id=eos_token_id,
            seq_len=cfg.seq_len, k_max=cfg.k_max, k_min=cfg.k_min, stride=cfg.stride,
            regions=cfg.regions, rng=rng))
    return collate(packed, pad_token_id)


def frozen_teacher(student, dtype=None):
    """A frozen copy of the student's current weights (the paper's teacher)."""
    teacher = copy.deepcopy(student)
    if dtype is not None:
        teacher.to(dtype)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _autocast(device):
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _micro_step(student, teacher, examples, start, cfg, ids, device):
    batch = make_batch(examples, start, cfg, *ids).to(device)
    with _autocast(device):
        out = mtp_loss(student, teacher, batch, kind=cfg.loss, eos_token_id=ids[1],
                       ntp_weight=cfg.ntp_weight, mask_token_id=ids[0])
    (out.loss / cfg.grad_accum).backward()
    return out


def _optimizer_step(student, teacher, examples, cfg, optimizer, step, lr, ids, device):
    """One AdamW step over ``cfg.grad_accum`` micro-batches; returns their LossOutputs."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    outs = [_micro_step(student, teacher, examples, (step * cfg.grad_accum + m) * cfg.batch_size,
                        cfg, ids, device) for m in range(cfg.grad_accum)]
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return outs


def _step_record(step, outs, lr, t0):
    n_block = sum(o.n_block for o in outs) or 1
    n_mask = sum(o.n_mask for o in outs) or 1
    return {"step": step, "lr": lr,
            "loss": sum(o.loss.item() for o in outs) / len(outs),
            "mtp": sum(o.mtp for o in outs) / len(outs),
            "ntp": sum(o.ntp for o in outs) / len(outs),
            "agree": sum(o.agree_block * o.n_block for o in outs) / n_block,
            "agree_mask": sum(o.agree_mask * o.n_mask for o in outs) / n_mask,
            "time": round(time.time() - t0, 2)}


def train(student, teacher, examples, cfg: TrainConfig, *, mask_token_id, eos_token_id,
          pad_token_id=0, out_dir=None, tokenizer=None, start_step=0, optimizer_state=None,
          progress=True, extra_state=None, callback=None, validation=None, eval_every=0,
          keep_best=None) -> list:
    """Run ``cfg.steps`` optimizer steps (from ``start_step``); returns per-step records.

    ``validation`` (:class:`~sglang_mtp.train.validate.Validation`): held-out prompts decoded
    every ``eval_every`` steps, before the first step and after the last; the records go to
    ``validation.history``, the log and ``out_dir/validation.png``. ``keep_best``
    (:class:`~sglang_mtp.train.validate.KeepBest`, needs ``out_dir``): the best evaluation's
    model is saved to ``out_dir/best`` and the choice explained in ``out_dir/best.json``.

    ``teacher`` must be frozen (see :func:`frozen_teacher`); ``examples`` is a list of
    :class:`~sglang_mtp.train.data.Example`. With ``out_dir``, checkpoints go to
    ``out_dir/checkpoint-STEP`` every ``cfg.save_every`` steps and the final model to
    ``out_dir`` itself, with a ``train_log.jsonl``.
    """
    cfg.validate()
    if any(p.requires_grad for p in teacher.parameters()):
        raise ValueError("teacher must be frozen (requires_grad False); use frozen_teacher()")
    device = next(student.parameters()).device
    student.train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    ids = (mask_token_id, eos_token_id, pad_token_id)
    history, t0 = [], time.time()
    evaluator = _Evaluator(student, teacher, validation, eval_every, keep_best, cfg, out_dir, progress,
                           lambda path, step: save_checkpoint(student, path, mask_token_id, tokenizer, cfg, step,
                                                              None, extra_state))
    if start_step == 0:
        evaluator.run(0)
    bar = _progress(cfg.steps, start_step, progress)
    for step in range(start_step, cfg.steps):
        lr = lr_at(step, cfg)
        outs = _optimizer_step(student, teacher, examples, cfg, optimizer, step, lr, ids, device)
        rec = _step_record(step + 1, outs, lr, t0)
        history.append(rec)
        _report(bar, history, out_dir, progress, cfg.log_every, cfg.steps)
        if callback is not None:
            callback(rec)
        evaluator.maybe_run(step + 1)
        if out_dir and cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(student, os.path.join(out_dir, f"checkpoint-{step + 1}"),
                            mask_token_id, tokenizer, cfg, step + 1, optimizer, extra_state)
    if bar is not None:
        bar.close()
    if out_dir:
        save_checkpoint(student, out_dir, mask_token_id, tokenizer, cfg, cfg.steps, optimizer,
                        extra_state)
    evaluator.finish()
    student.eval()
    return history


class _Evaluator:
    """Held-out validation and checkpoint selection inside :func:`train` (no-op without
    a validation set)."""

    def __init__(self, student, teacher, validation, every, keep_best, cfg, out_dir, progress, save):
        from .validate import teacher_reference

        self.student, self.val, self.every, self.keep = student, validation, every, keep_best
        self.cfg, self.out_dir, self.progress, self.save = cfg, out_dir, progress, save
        if validation is None:
            if keep_best is not None:
                raise ValueError("keep_best needs a validation set (--eval-data)")
            return
        if keep_best is not None and not out_dir:
            raise ValueError("keep_best needs an output directory")
        if every < 0:
            raise ValueError(f"eval_every must be >= 0, got {every}")
        validation.history = []
        validation.teacher = teacher_reference(teacher, validation)
        self._log({"eval_teacher": validation.teacher})

    def maybe_run(self, step):
        if self.val is not None and ((self.every and step % self.every == 0) or step == self.cfg.steps):
            self.run(step)

    def run(self, step):
        from .validate import summary_line, validate

        if self.val is None or any(r["step"] == step for r in self.val.history):
            return
        ev = validate(self.student, self.val, self.cfg.k_max)
        self.val.history.append({"step": step, "eval": ev})
        self._log({"step": step, "eval": ev})
        if self.progress:
            print(summary_line(step, ev), file=sys.stderr, flush=True)
        if self.keep is not None and self.keep.offer(step, ev):
            self.save(os.path.join(self.out_dir, "best"), step)

    def finish(self):
        if self.val is None:
            return
        if self.keep is not None:
            with open(os.path.join(self.out_dir, "best.json"), "w") as f:
                f.write(self.keep.to_json())
            print(f"[mtp-eval] {self.keep.reason()}", file=sys.stderr, flush=True)
        if self.out_dir:
            from .validate import plot_validation

            plot_validation(self.val.history, os.path.join(self.out_dir, "validation.png"))

    def _log(self, rec):
        if self.out_dir:
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, "train_log.jsonl"), "a") as f:
                f.write(json.dumps(rec) + "\n")


def _progress(total, initial, enabled):
    """A tqdm bar on a terminal; None otherwise (then :func:`_report` logs plain lines)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="mtp-train", dynamic_ncols=True)


def _report(bar, history, out_dir, progress=True, log_every=10, total=None):
    """Progress bar / log line with running means over the last 20 steps; JSONL log."""
    rec, recent = history[-1], history[-20:]
    mean = {k: sum(r[k] for r in recent) / len(recent) for k in ("loss", "agree", "agree_mask")}
    stats = (f"loss={mean['loss']:.3f} agree={mean['agree']:.2f} "
             f"agree_mask={mean['agree_mask']:.2f} lr={rec['lr']:.1e}")
    if bar is not None:
        bar.set_postfix_str(stats)
        bar.update(1)
    elif progress and log_every and (rec["step"] % log_every == 0 or rec["step"] == total):
        print(f"[mtp-train] step {rec['step']}/{total} {stats} ({rec['time']:.0f}s)",
              file=sys.stderr, flush=True)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "train_log.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")


def save_checkpoint(model, path, mask_token_id, tokenizer=None, cfg=None, step=None,
                    optimizer=None, extra_state=None):
    """Save an HF checkpoint marked MTP-trained, plus the state needed to resume."""
    os.makedirs(path, exist_ok=True)
    model.config.mtp_mask_token_id = int(mask_token_id)
    model.config.mtp_trained = True
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    state = {"step": step, "config": asdict(cfg) if cfg else None, **(extra_state or {})}
    with open(os.path.join(path, "trainer_state.json"), "w") as f:
        json.dump(state, f, indent=1)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(path, "optimizer.pt"))


def load_trainer_state(path):
    """(trainer_state dict, optimizer state dict or None) of a checkpoint directory."""
    state_file = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_file):
        raise ValueError(f"resume checkpoint {path!r} has no trainer_state.json")
    with open(state_file) as f:
        state = json.load(f)
    opt_file = os.path.join(path, "optimizer.pt")
    opt = torch.load(opt_file, map_location="cpu") if os.path.isfile(opt_file) else None
    return state, opt
