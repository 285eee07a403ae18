"""``sglang-mtp train``: MTP self-distillation of a local HF checkpoint that has a mask token.

Example::

    sglang-mtp convert --model ./my-llm --out ./my-llm-mtp0
    sglang-mtp train --model ./my-llm-mtp0 --data train.jsonl --out ./my-llm-mtp \\
        --steps 2000 --lr 1e-5 --warmup-steps 200 --batch-size 8 --grad-accum 16

The teacher is the ``--model`` checkpoint itself (frozen); ``--resume DIR`` continues from a
checkpoint written by an earlier run (the teacher is still ``--model``).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .data import load_examples
from .trainer import TrainConfig, frozen_teacher, load_trainer_state, train


def build_parser(prog="sglang-mtp train") -> argparse.ArgumentParser:
    """Argument parser of the train command."""
    d = TrainConfig()
    p = argparse.ArgumentParser(prog=prog, description="MTP self-distillation of a local HF "
                                "checkpoint that has a <MTP> mask token (sglang-mtp convert).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="HF checkpoint with a <MTP> mask token")
    p.add_argument("--data", required=True, help=".jsonl (prompt/response or text) or .txt")
    p.add_argument("--out", required=True, help="output directory (checkpoints, final model)")
    p.add_argument("--resume", default=None,
                   help="checkpoint directory to resume from ('auto': latest in --out)")
    p.add_argument("--mask-token-id", type=int, default=None, help="override the mask id")
    p.add_argument("--chat-template", action="store_true", help="wrap prompts as a user turn")
    p.add_argument("--prompt-field", default="prompt")
    p.add_argument("--response-field", default="response")
    for name in ("steps", "warmup_steps", "batch_size", "grad_accum", "seq_len", "k_max",
                 "k_min", "stride", "regions", "seed", "save_every", "log_every"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "ntp_weight", "weight_decay", "max_grad_norm"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--loss", choices=("hard", "soft"), default=d.loss)
    p.add_argument("--schedule", choices=("constant", "cosine"), default=d.schedule,
                   help="learning rate after warm-up (constant = the paper)")
    v = p.add_argument_group("held-out validation (sglang_mtp/train/validate.py)")
    v.add_argument("--eval-data", default=None,
                   help="JSONL of held-out prompts (optional 'answer' field): decoded against the teacher's "
                        "greedy output before training, every --eval-every steps and at the end")
    v.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (0: start and end only)")
    v.add_argument("--eval-max-new-tokens", type=int, default=64)
    v.add_argument("--eval-strategies", default="conf_adapt:0.95,conf_adapt:0.9,conf_adapt:0.8,verify",
                   help="comma-separated strategies (k = --k-max unless given)")
    v.add_argument("--answer-field", default="answer")
    v.add_argument("--keep-best", default=None, metavar="'MODE, agreement>=X'",
                   help="keep the evaluation with the highest effective k of MODE whose agreement with "
                        "the teacher (or token_agreement / accuracy) is >= X, in OUT/best")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def _validation(args, tokenizer):
    """(Validation or None, KeepBest or None) from the --eval-* / --keep-best flags."""
    from .validate import KeepBest, load_validation

    if args.eval_data is None:
        if args.keep_best or args.eval_every:
            raise ValueError("--keep-best and --eval-every need --eval-data")
        return None, None
    if args.eval_every < 0 or args.eval_max_new_tokens < 1:
        raise ValueError("--eval-every must be >= 0 and --eval-max-new-tokens >= 1")
    strategies = tuple(s.strip() for s in args.eval_strategies.split(",") if s.strip())
    val = load_validation(args.eval_data, tokenizer, chat_template=args.chat_template,
                          prompt_field=args.prompt_field, answer_field=args.answer_field,
                          max_new_tokens=args.eval_max_new_tokens, strategies=strategies)
    val.specs(args.k_max)  # unknown strategies fail now, not after the first steps
    return val, (KeepBest.parse(args.keep_best) if args.keep_best else None)


def _latest_checkpoint(out_dir):
    steps = [int(n.split("-")[1]) for n in os.listdir(out_dir)
             if n.startswith("checkpoint-") and n.split("-")[1].isdigit()] \
        if os.path.isdir(out_dir) else []
    if not steps:
        raise ValueError(f"--resume auto: no checkpoint-* directory in {out_dir!r}")
    return os.path.join(out_dir, f"checkpoint-{max(steps)}")


def _load(path, device, dtype):
    from transformers import AutoModelForCausalLM
    if not os.path.isdir(path):
        raise ValueError(f"model path {path!r} is not a directory")
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)


def train_main(argv=None) -> int:
    """Entry point of ``sglang-mtp train``; returns the exit status."""
    from transformers import AutoTokenizer

    from ..convert import resolve_mask_token_id

    args = build_parser().parse_args(argv)
    cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__})
    cfg.validate()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher_dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    teacher = frozen_teacher(_load(args.model, device, teacher_dtype))
    mask_id = resolve_mask_token_id(teacher.config, args.mask_token_id)
    start_step, opt_state, student_path = 0, None, args.model
    if args.resume:
        student_path = _latest_checkpoint(args.out) if args.resume == "auto" else args.resume
        state, opt_state = load_trainer_state(student_path)
        start_step = int(state["step"] or 0)
    student = _load(student_path, device, torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples = load_examples(args.data, tokenizer, chat_template=args.chat_template,
                             max_len=cfg.seq_len, prompt_field=args.prompt_field,
                             response_field=args.response_field)
    print(f"[train] {len(examples)} examples, teacher {args.model}, student {student_path}, "
          f"mask id {mask_id}, device {device}, steps {start_step}->{cfg.steps}", file=sys.stderr)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    validation, keep_best = _validation(args, tokenizer)
    train(student, teacher, examples, cfg, mask_token_id=mask_id,
          eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id, out_dir=args.out,
          tokenizer=tokenizer, start_step=start_step, optimizer_state=opt_state,
          progress=not args.no_progress, extra_state={"teacher": os.path.abspath(args.model)},
          validation=validation, eval_every=args.eval_every, keep_best=keep_best)
    print(f"[train] saved {args.out}", file=sys.stderr)
    return 0
