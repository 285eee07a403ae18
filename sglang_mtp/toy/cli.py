"""``sglang-mtp toy``: build (or reuse) the toy MTP model end to end and print its table.

    sglang-mtp toy                      # whole pipeline, cached in ~/.cache/sglang-mtp/toy
    sglang-mtp toy --until mtp          # only build the model (no evaluation)
    sglang-mtp toy --force mtp,eval     # redo the MTP adaptation and the evaluation
"""

from __future__ import annotations

import argparse
import dataclasses

from ..stages import run_from_args, timing_line
from .pipeline import STAGES, ToyConfig, default_cache_dir, run_pipeline


def build_parser(prog="sglang-mtp toy") -> argparse.ArgumentParser:
    """Argument parser of the toy command."""
    d = ToyConfig()
    p = argparse.ArgumentParser(prog=prog, description="Build (or reuse) the CPU toy MTP model "
                                "end to end and print its accuracy / effective-k table.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cache-dir", default=None,
                   help=f"artefact directory (default $SGLANG_MTP_TOY_DIR or {default_cache_dir()})")
    p.add_argument("--until", choices=STAGES, default="eval", help="last stage to run")
    p.add_argument("--force", default="", help="comma-separated stages to recompute, or 'all'")
    p.add_argument("--quick", action="store_true", help="tiny smoke-test settings")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for this model size on a busy CPU)")
    p.add_argument("--teacher-steps", type=int, default=d.teacher_steps)
    p.add_argument("--two-step", type=float, default=d.two_step,
                   help="fraction of two-step problems (a harder task: needs far more "
                        "teacher steps than the default)")
    p.add_argument("--n-eval", type=int, default=d.n_eval)
    p.add_argument("--mtp-steps", type=int, default=d.mtp.steps)
    p.add_argument("--mtp-lr", type=float, default=d.mtp.lr)
    p.add_argument("--ntp-weight", type=float, default=d.mtp.ntp_weight,
                   help="auxiliary next-token KL on ground-truth rows (0 = the paper's setting)")
    p.add_argument("--loss", choices=("hard", "soft"), default=d.mtp.loss)
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(args) -> ToyConfig:
    """The ToyConfig the command line asks for."""
    if args.quick:
        return ToyConfig.quick()
    mtp = dataclasses.replace(ToyConfig().mtp, steps=args.mtp_steps, lr=args.mtp_lr,
                              ntp_weight=args.ntp_weight, loss=args.loss)
    if not 0.0 <= args.two_step <= 1.0:
        raise ValueError(f"--two-step must be in [0, 1], got {args.two_step}")
    return ToyConfig(teacher_steps=args.teacher_steps, n_eval=args.n_eval, mtp=mtp,
                     two_step=args.two_step)


def toy_main(argv=None) -> int:
    """Entry point of ``sglang-mtp toy``; returns the exit status."""
    args = build_parser().parse_args(argv)
    report = run_from_args(args, STAGES, run_pipeline, config_from_args(args))
    if "eval" in report:
        from .evaluate import markdown_table
        print(markdown_table(report["eval"]["rows"]))
        print(f"\nplot: {report['paths']['eval']}/pareto.png")
    print(f"toy MTP model: {report['paths']['mtp']}")
    print(timing_line(report))
    return 0
