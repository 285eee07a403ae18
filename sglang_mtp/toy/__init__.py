"""The CPU toy: a tiny Llama learns templated arithmetic word problems (the teacher), gets
the <MTP> token, is MTP-adapted with :mod:`sglang_mtp.train`, and is evaluated with the
reference decoder (accuracy vs. effective k table and plot). ``sglang-mtp toy`` runs it;
:func:`ensure_toy_model` returns the cached toy MTP model, building it when absent.
"""

from .data import Problem, make_splits, parse_answer
from .pipeline import ToyConfig, default_cache_dir, run_pipeline


def ensure_toy_model(cache_dir=None, log=print) -> str:
    """Path of the toy MTP model (HF checkpoint + tokenizer), built on first use."""
    # progress: a bar on a terminal, else a plain line every 50 training steps (logs, CI)
    report = run_pipeline(ToyConfig(), cache_dir, until="mtp", progress=True, log=log)
    return report["paths"]["mtp"]


def toy_main(argv=None) -> int:
    """``sglang-mtp toy`` (see :mod:`sglang_mtp.toy.cli`)."""
    from .cli import toy_main as _main
    return _main(argv)


__all__ = ["Problem", "ToyConfig", "default_cache_dir", "ensure_toy_model", "make_splits",
           "parse_answer", "run_pipeline", "toy_main"]
