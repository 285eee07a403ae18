"""Held-out evaluation with the reference decoder: one row per (model, strategy).

Used by the toy (``sglang-mtp toy``) and the real-model recipe (``sglang-mtp smollm2``).
Each row: the rate of outputs identical to the teacher's greedy output (the ``teacher``
model's ``ntp`` row), identical to the model's own greedy output (its ``static:1`` or
``ntp`` row), effective k (tokens emitted / forward passes, over all prompts), forward
passes per prompt, wall time and, with a ``score`` function, task accuracy.
"""

from __future__ import annotations

import time
import warnings


def run_strategy(model, prompts, spec, max_new_tokens=40, stop_token_ids=None, batch_size=100):
    """Decode token-id ``prompts`` with one strategy; returns (token lists, passes, seconds)."""
    from .decode import generate

    tokens, passes, t0 = [], 0, time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-teacher row warns by design
        for i in range(0, len(prompts), batch_size):
            results = generate(model, prompts[i:i + batch_size], strategy=spec,
                               max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids)
            tokens += [r.tokens for r in results]
            passes += sum(r.passes for r in results)
    return tokens, passes, time.perf_counter() - t0


def evaluate(models: dict, prompts, rows, *, decode=None, score=None, max_new_tokens=40,
             stop_token_ids=None, batch_size=100, reference=None, log=print,
             tag="eval") -> list:
    """Evaluate ``rows`` of (model name, strategy spec) on token-id ``prompts``.

    ``models`` maps names to models (``"teacher"`` is the reference for "same as teacher");
    ``decode(token lists) -> texts`` gives each row an example text; ``score(texts) ->
    fraction`` an accuracy. ``reference`` (model name -> greedy token lists) is filled in
    place, so a later call can compare against this call's teacher rows.
    """
    reference = {} if reference is None else reference
    out = []
    for name, spec in rows:
        tokens, passes, secs = run_strategy(models[name], prompts, spec, max_new_tokens,
                                            stop_token_ids, batch_size)
        if (name, spec) == ("teacher", "ntp"):
            reference["teacher"] = tokens
        if spec in ("static:1", "ntp"):
            reference.setdefault(name, tokens)
        texts = decode(tokens) if decode else None
        row = {"model": name, "strategy": spec,
               "accuracy": score(texts) if score else None,
               "same_as_teacher": _same(tokens, reference.get("teacher")),
               "same_as_own_greedy": _same(tokens, reference.get(name)),
               "effective_k": sum(len(t) for t in tokens) / max(passes, 1),
               "passes_per_problem": passes / len(prompts),
               "seconds": round(secs, 2),
               "example": texts[0] if texts else None}
        out.append(row)
        if log:
            acc = "" if row["accuracy"] is None else f"acc {row['accuracy']:.3f} "
            log(f"[{tag}] {name:8s} {spec:18s} {acc}eff_k {row['effective_k']:.2f} "
                f"same_as_teacher {row['same_as_teacher']}")
    return out


def _same(tokens, reference):
    if reference is None:
        return None
    return sum(a == b for a, b in zip(tokens, reference)) / len(tokens)


def markdown_table(rows) -> str:
    """The evaluation as a markdown table (percentages; accuracy only when scored)."""
    scored = any(r.get("accuracy") is not None for r in rows)
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    head = ["model", "strategy"] + (["accuracy %"] if scored else []) + [
        "same as teacher %", "same as own greedy %", "effective k", "passes / prompt"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [r["model"], r["strategy"]] + ([pct(r["accuracy"])] if scored else []) + [
            pct(r["same_as_teacher"]), pct(r["same_as_own_greedy"]), f"{r['effective_k']:.2f}",
            f"{r['passes_per_problem']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
