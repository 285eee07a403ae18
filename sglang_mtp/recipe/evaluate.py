"""The recipe's evaluation on held-out prompts: the table (ntp, static 2/3, ConfAdapt
0.95/0.9/0.8, verify), the Pareto plot, and the learning curve (effective k and "same as
the teacher's greedy" vs training step, over the saved checkpoints)."""

from __future__ import annotations

import json
import os
import re

import torch

from ..evaluate import evaluate, markdown_table
from ..plot import curve_png, pareto_png

TAUS = (0.95, 0.9, 0.8)


def table_rows(k_max: int) -> list:
    """(model name, strategy spec) rows of the recipe's table."""
    rows = [("teacher", "ntp"), ("mtp", "static:1"), ("mtp", "static:2"), ("mtp", "static:3")]
    rows += [("mtp", f"conf_adapt:{tau}:{k_max}") for tau in TAUS]
    return rows + [("mtp", f"verify:{k_max}")]


def curve_specs(k_max: int) -> tuple:
    """The strategies tracked by the learning curve."""
    return (f"verify:{k_max}", f"conf_adapt:0.9:{k_max}")


def checkpoints(mtp_dir, final_step) -> list:
    """(step, path) of every ``checkpoint-N`` in ``mtp_dir`` plus the final model."""
    found = [(int(m.group(1)), os.path.join(mtp_dir, n)) for n in os.listdir(mtp_dir)
             if (m := re.fullmatch(r"checkpoint-(\d+)", n))]
    return sorted(found) + [(final_step, mtp_dir)]


def _load(path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def learning_curve(teacher, ckpts, k_max, table, run, log) -> list:
    """One point per (step, strategy); step 0 is the converted model, the last step reuses
    the table's rows."""
    final = {r["strategy"]: r for r in table if r["model"] == "mtp"}
    points = []
    for step, path in [(0, None)] + ckpts:
        if step == ckpts[-1][0]:
            rows = [final[s] for s in curve_specs(k_max)]
        else:
            model = teacher if path is None else _load(path)
            rows = run(model, [("mtp", s) for s in curve_specs(k_max)])
        points += [{"step": step, "strategy": r["strategy"], "effective_k": r["effective_k"],
                    "same_as_teacher": r["same_as_teacher"]} for r in rows]
        log(f"[recipe/curve] step {step}: " + ", ".join(
            f"{r['strategy']} eff_k {r['effective_k']:.2f} same {r['same_as_teacher']:.2f}"
            for r in rows))
    return points


def curve_table(points) -> str:
    """The learning curve as a markdown table (one row per step)."""
    specs = list(dict.fromkeys(p["strategy"] for p in points))
    by = {(p["step"], p["strategy"]): p for p in points}
    head = "| step | " + " | ".join(f"{s} eff k | {s} same % " for s in specs) + "|"
    lines = [head, "|---:|" + "---:|---:|" * len(specs)]
    for step in sorted({p["step"] for p in points}):
        cells = [f"{by[step, s]['effective_k']:.2f} | {100 * by[step, s]['same_as_teacher']:.1f}"
                 for s in specs]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_eval(cfg, paths, out_dir, log=print) -> dict:
    """Stage 4: table, plot and learning curve of the recipe in ``out_dir``."""
    from transformers import AutoTokenizer

    from .distill import chat_ids
    from .pipeline import heldout_prompts

    tokenizer = AutoTokenizer.from_pretrained(paths["mtp"])
    prompts = [chat_ids(tokenizer, p) for p in heldout_prompts(paths["data"])]
    teacher = _load(paths["converted"])
    kw = dict(max_new_tokens=cfg.eval_tokens, stop_token_ids=[tokenizer.eos_token_id],
              batch_size=len(prompts), log=log, tag="recipe/eval",
              decode=lambda t: tokenizer.batch_decode(t, skip_special_tokens=True))
    reference = {}
    rows = evaluate({"teacher": teacher, "mtp": _load(paths["mtp"])}, prompts,
                    table_rows(cfg.eval_k_max), reference=reference, **kw)
    run = lambda model, specs: evaluate(  # noqa: E731
        {"mtp": model}, prompts, specs, reference={"teacher": reference["teacher"]}, **kw)
    points = learning_curve(teacher, checkpoints(paths["mtp"], cfg.mtp.steps), cfg.eval_k_max,
                            rows, run, log)
    _write(out_dir, rows, points)
    return {"rows": rows, "curve": points}


def _write(out_dir, rows, points):
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown_table(rows) + "\n")
    with open(os.path.join(out_dir, "curve.json"), "w") as f:
        json.dump(points, f, indent=1)
    with open(os.path.join(out_dir, "curve.md"), "w") as f:
        f.write(curve_table(points) + "\n")
    write_plots(rows, out_dir)
    curve_png(points, os.path.join(out_dir, "curve.png"))


def write_plots(rows, out_dir):
    """Effective k against "same as the teacher's greedy" (pareto.png) and against "same as
    the adapted model's own greedy" (pareto_own.png: what ConfAdapt/static give up)."""
    for name, metric, what in (("pareto.png", "same_as_teacher", "the teacher's greedy"),
                               ("pareto_own.png", "same_as_own_greedy", "own greedy")):
        pareto_png(rows, os.path.join(out_dir, name), metric=metric,
                   title=f"Held-out prompts: same as {what} vs. effective k")
