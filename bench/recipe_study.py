"""Which MTP adaptation recipe protects the base model? A measured comparison on teachers
that did NOT fully learn their task (the toy task with a short teacher run, and its two-step
variant), so damage to the model's own behaviour is visible.

For every (teacher, recipe): MTP self-distillation with held-out validation every
``--eval-every`` steps (``sglang_mtp.train.validate``; the toy's answer metric) on 100
validation problems, ``--keep-best "conf_adapt:0.9, accuracy>=teacher-0.03"``, then the
final and the kept model are scored on 100 OTHER held-out problems (test): accuracy of plain
decoding, ConfAdapt 0.9 / 0.8 and verify, with effective k. Writes results.json and
results.md to ``--out``.

    python bench/recipe_study.py --steps 400 --out bench/results/recipe-study
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sglang_mtp.toy.data import make_splits, parse_answer  # noqa: E402
from sglang_mtp.toy.pipeline import ToyConfig, _examples, _mtp_defaults, run_pipeline  # noqa: E402
from sglang_mtp.train.trainer import frozen_teacher, train  # noqa: E402
from sglang_mtp.train.validate import KeepBest, Validation, teacher_reference, validate  # noqa: E402

TEACHERS = {"short": dict(teacher_steps=450), "mid": dict(teacher_steps=600),
            "two_step": dict(two_step=0.5, teacher_steps=700)}
RECIPES = {
    "toy": {},  # the toy's recipe: lr 1e-3 cosine, hard, ntp_weight 5, a region every 3 tokens
    "lr3e-4": dict(lr=3e-4),
    "ntp20": dict(ntp_weight=20.0),
    "soft": dict(loss="soft"),
    "sparse": dict(stride=6),
}
MODES = ("conf_adapt:0.9", "conf_adapt:0.8", "verify")


def toy_metric(text, answer) -> bool:
    return parse_answer(text) == int(answer)


def validation_sets(cfg, tokenizer):
    _, held = make_splits(cfg.n_train, cfg.n_eval, cfg.seed, cfg.two_step)
    sets = []
    for part in (held[:100], held[100:200]):
        prompts = [tokenizer(p.prompt)["input_ids"] for p in part]
        sets.append(Validation(prompts, [p.answer for p in part], tokenizer, metric=toy_metric, max_new_tokens=40,
                               strategies=MODES, stop_token_ids=(tokenizer.eos_token_id,)))
    return sets


def run(teacher_name, recipe_name, args, log):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = ToyConfig(**TEACHERS[teacher_name])
    cache = os.path.join(args.cache, teacher_name)
    report = run_pipeline(cfg, cache_dir=cache, until="converted", progress=False, log=log)
    converted = report["paths"]["converted"]
    tok = AutoTokenizer.from_pretrained(converted)
    student = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    teacher = frozen_teacher(student)
    val, test = validation_sets(cfg, tok)
    teacher_val = teacher_reference(teacher, val)["accuracy"]
    teacher_test = teacher_reference(teacher, test)["accuracy"]
    mtp = replace(_mtp_defaults(), steps=args.steps, save_every=0, log_every=0, **RECIPES[recipe_name])
    train_p, _ = make_splits(cfg.n_train, cfg.n_eval, cfg.seed, cfg.two_step)
    out_dir = os.path.join(args.out, "runs", f"{teacher_name}-{recipe_name}")
    keep = KeepBest("conf_adapt:0.9", "accuracy", round(max(0.0, teacher_val - 0.03), 4))
    t0 = time.time()
    train(student, teacher, _examples(tok, train_p), mtp, mask_token_id=student.config.mtp_mask_token_id,
          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, out_dir=out_dir, tokenizer=tok,
          progress=True, validation=val, eval_every=args.eval_every, keep_best=keep)
    result = {"teacher": teacher_name, "recipe": recipe_name, "mtp": RECIPES[recipe_name], "steps": args.steps,
              "teacher_accuracy": {"val": teacher_val, "test": teacher_test}, "train_s": round(time.time() - t0),
              "curve": val.history, "kept": keep.best, "reason": keep.reason(),
              "test": {"final": validate(student, test, mtp.k_max)}}
    if keep.best is not None:
        best = AutoModelForCausalLM.from_pretrained(os.path.join(out_dir, "best"), dtype=torch.float32)
        result["test"]["kept"] = validate(best, test, mtp.k_max)
    return result


def markdown(results) -> str:
    lines = ["| teacher (test acc) | recipe | model | plain acc | CA 0.9 acc / k | CA 0.8 acc / k | verify k |",
             "|---|---|---|---:|---:|---:|---:|"]
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    for r in results:
        for which, ev in r["test"].items():
            step = r["steps"] if which == "final" else r["kept"]["step"]
            lines.append(
                f"| {r['teacher']} ({pct(r['teacher_accuracy']['test'])}) | {r['recipe']} | {which} @ {step} | "
                f"{pct(ev['plain']['accuracy'])} | {pct(ev['conf_adapt:0.9']['accuracy'])} / "
                f"{ev['conf_adapt:0.9']['effective_k']:.2f} | {pct(ev['conf_adapt:0.8']['accuracy'])} / "
                f"{ev['conf_adapt:0.8']['effective_k']:.2f} | {ev['verify']['effective_k']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teachers", default=",".join(TEACHERS))
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "sglang-mtp", "study"))
    p.add_argument("--out", default="bench/results/recipe-study")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path)) if os.path.isfile(path) else []
    done = {(r["teacher"], r["recipe"], r["steps"]) for r in results}
    for t in args.teachers.split(","):
        for rc in args.recipes.split(","):
            if (t, rc, args.steps) in done:
                continue
            print(f"=== teacher {t}, recipe {rc}", flush=True)
            results.append(run(t, rc, args, lambda *a: print(*a, flush=True)))
            with open(path, "w") as f:
                json.dump(results, f, indent=1)
            with open(os.path.join(args.out, "results.md"), "w") as f:
                f.write(markdown(results) + "\n")
            print(markdown(results[-1:]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
