"""Held-out evaluation of the toy models (the paper's table), on :mod:`sglang_mtp.evaluate`.

The rows: the teacher with ``ntp``; the teacher with ConfAdapt 0.9 (its mask token
untrained: shows why checkpoints carry ``mtp_trained``); the MTP model with static k,
ConfAdapt tau and ``verify``. Accuracy = exact answers (:func:`~.data.parse_answer`).
"""

from __future__ import annotations

from .. import evaluate as generic
from ..evaluate import markdown_table
from .data import parse_answer

STATIC_KS = (1, 2, 3, 4, 6)
TAUS = (0.99, 0.95, 0.9, 0.8, 0.6)


def default_rows(k_max: int) -> list:
    """(model name, strategy spec) pairs of the standard table."""
    rows = [("teacher", "ntp"), ("teacher", f"conf_adapt:0.9:{k_max}")]
    rows += [("mtp", f"static:{k}") for k in STATIC_KS]
    rows += [("mtp", f"conf_adapt:{tau}:{k_max}") for tau in TAUS]
    rows += [("mtp", f"verify:{k_max}")]
    return rows


def checkpoint_rows(name: str, k_max: int) -> list:
    """A shorter set of rows for an intermediate checkpoint (learning in progress)."""
    return [(name, s) for s in ("static:1", "static:2", "static:4", f"static:{k_max}",
                                f"conf_adapt:0.99:{k_max}", f"conf_adapt:0.9:{k_max}")]


def evaluate(models: dict, tokenizer, problems, rows, log=print) -> list:
    """Evaluate ``rows`` of (model name, strategy spec) on toy ``problems``."""
    prompts = [tokenizer(p.prompt)["input_ids"] for p in problems]
    decode = lambda t: tokenizer.batch_decode(t, skip_special_tokens=True)  # noqa: E731
    score = lambda texts: sum(parse_answer(t) == p.answer  # noqa: E731
                              for t, p in zip(texts, problems)) / len(problems)
    return generic.evaluate(models, prompts, rows, decode=decode, score=score,
                            stop_token_ids=[tokenizer.eos_token_id], log=log, tag="toy/eval")


__all__ = ["checkpoint_rows", "default_rows", "evaluate", "markdown_table"]
