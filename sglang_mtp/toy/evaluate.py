"""Held-out evaluation of the toy models with the reference decoder (the paper's table).

For every (model, strategy) row: exact-answer accuracy, the rate of outputs identical to
the teacher's greedy output, effective k (tokens emitted / forward passes, over all
problems), forward passes per problem and wall time. The rows: the teacher with ``ntp``;
the teacher with ConfAdapt 0.9 (its mask token untrained: shows why checkpoints carry
``mtp_trained``); the MTP model with static k, ConfAdapt tau and ``verify``.
"""

from __future__ import annotations

import time
import warnings

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


def run_strategy(model, tokenizer, problems, spec, max_new_tokens=40, batch_size=100):
    """Decode every problem with one strategy; returns (texts, token lists, passes, seconds)."""
    from ..decode import generate

    prompts = [tokenizer(p.prompt)["input_ids"] for p in problems]
    tokens, passes, t0 = [], 0, time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-teacher row warns by design
        for i in range(0, len(prompts), batch_size):
            results = generate(model, prompts[i:i + batch_size], strategy=spec,
                               max_new_tokens=max_new_tokens,
                               stop_token_ids=[tokenizer.eos_token_id])
            tokens += [r.tokens for r in results]
            passes += sum(r.passes for r in results)
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return texts, tokens, passes, time.perf_counter() - t0


def evaluate(models: dict, tokenizer, problems, rows, log=print) -> list:
    """Evaluate ``rows`` of (model name, strategy spec); ``models`` maps names to models."""
    reference = {}
    out = []
    for name, spec in rows:
        texts, tokens, passes, secs = run_strategy(models[name], tokenizer, problems, spec)
        if (name, spec) == ("teacher", "ntp"):
            reference["teacher"] = tokens
        if spec == "static:1":
            reference[name] = tokens
        n_tok = sum(len(t) for t in tokens)
        row = {
            "model": name, "strategy": spec,
            "accuracy": sum(parse_answer(t) == p.answer for t, p in zip(texts, problems))
            / len(problems),
            "same_as_teacher": _same(tokens, reference.get("teacher")),
            "same_as_own_greedy": _same(tokens, reference.get(name)),
            "effective_k": n_tok / max(passes, 1),
            "passes_per_problem": passes / len(problems),
            "seconds": round(secs, 2),
            "example": texts[0],
        }
        out.append(row)
        if log:
            log(f"[toy/eval] {name:8s} {spec:18s} acc {row['accuracy']:.3f} "
                f"eff_k {row['effective_k']:.2f} same_as_teacher {row['same_as_teacher']}")
    return out


def _same(tokens, reference):
    if reference is None:
        return None
    return sum(a == b for a, b in zip(tokens, reference)) / len(tokens)


def markdown_table(rows) -> str:
    """The evaluation as a markdown table (accuracy in %, like the paper)."""
    lines = ["| model | strategy | accuracy % | same as teacher % | same as own greedy % "
             "| effective k | passes / problem |",
             "|---|---|---:|---:|---:|---:|---:|"]
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['model']} | {r['strategy']} | {pct(r['accuracy'])} | "
                     f"{pct(r['same_as_teacher'])} | {pct(r['same_as_own_greedy'])} | "
                     f"{r['effective_k']:.2f} | {r['passes_per_problem']:.1f} |")
    return "\n".join(lines)
