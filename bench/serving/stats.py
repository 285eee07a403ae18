"""Per-run summaries and the ratio table against the baseline mode.

Plain dict/list data in and out, so the report can be rebuilt from the results JSON alone.
"""

from __future__ import annotations

import statistics
from typing import Dict, List, Optional


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _percentile(values, q: float) -> Optional[float]:
    """Nearest-rank percentile (q in [0, 100]) of the non-None values."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    rank = max(1, -(-len(values) * q // 100))  # ceil without floats
    return values[int(rank) - 1]


def summarize(requests: List[dict], wall: float, mode_kind: str = "") -> dict:
    """Aggregate one (mode, concurrency) run from its per-request records (``to_json()``).

    ``throughput`` = all output tokens / wall time; ``per_user_tps_*`` = per-request
    output tokens / latency; ``effective_k`` = output tokens / server-reported forward
    passes over the requests that report them (ntp: 1 by definition; else None = unknown);
    ``accuracy`` over the completed requests that have an answer.
    """
    ok = [r for r in requests if r["ok"]]
    total_tokens = sum(r["output_tokens"] for r in ok)
    reported = [r for r in ok if r.get("forward_passes")]
    if reported:
        eff_k = sum(r["output_tokens"] for r in reported) / sum(r["forward_passes"] for r in reported)
        eff_k_source = "server" if len(reported) == len(ok) else f"server ({len(reported)}/{len(ok)} requests)"
    elif mode_kind in ("ntp", "plain") and ok:
        eff_k, eff_k_source = 1.0, "definition"
    else:
        eff_k, eff_k_source = None, "not reported"
    graded = [r["correct"] for r in ok if r.get("correct") is not None]
    tps = [r.get("tokens_per_s") for r in ok]
    return {
        "requests": len(requests),
        "completed": len(ok),
        "failed": len(requests) - len(ok),
        "errors": sorted({r["error"] for r in requests if not r["ok"] and r.get("error")})[:5],
        "output_tokens": total_tokens,
        "wall_s": wall,
        "throughput": total_tokens / wall if wall > 0 and ok else None,
        "per_user_tps_mean": statistics.fmean([t for t in tps if t is not None]) if ok else None,
        "per_user_tps_median": _median(tps),
        "latency_p50": _median([r["latency"] for r in ok]),
        "latency_p90": _percentile([r["latency"] for r in ok], 90),
        "ttft_p50": _median([r["ttft"] for r in ok]),
        "ttft_p90": _percentile([r["ttft"] for r in ok], 90),
        "mean_output_tokens": total_tokens / len(ok) if ok else None,
        "effective_k": eff_k,
        "effective_k_source": eff_k_source,
        "accuracy": sum(graded) / len(graded) if graded else None,
        "graded": len(graded),
    }


def median_index(values: List[float]) -> int:
    """Index of the median value (the upper middle one for an even count)."""
    if not values:
        raise ValueError("median_index of no values")
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[len(values) // 2]


def pick_baseline(mode_names: List[str], wanted: str = "ntp") -> Optional[str]:
    """The baseline mode name: ``wanted`` if it ran, else ``plain``, else None (no ratios)."""
    for name in (wanted, "plain"):
        if name in mode_names:
            return name
    return None


def ratio_rows(runs: List[dict], baseline: Optional[str]) -> List[dict]:
    """One row per run with ratios against the baseline at the SAME concurrency.

    ``runs``: dicts with ``mode``, ``concurrency``, ``status`` and (when ok) ``summary``.
    Ratio keys are None where the baseline did not run (or failed) at that concurrency.
    """
    base: Dict[int, dict] = {r["concurrency"]: r["summary"] for r in runs
                             if r["mode"] == baseline and r["status"] == "ok"}
    rows = []
    for r in runs:
        row = {"mode": r["mode"], "concurrency": r["concurrency"], "status": r["status"],
               "error": r.get("error"), **(r.get("summary") or {})}
        b = base.get(r["concurrency"])
        row["throughput_ratio"] = _ratio(row.get("throughput"), b and b.get("throughput"))
        row["per_user_ratio"] = _ratio(row.get("per_user_tps_median"), b and b.get("per_user_tps_median"))
        row["latency_ratio"] = _ratio(row.get("latency_p50"), b and b.get("latency_p50"))
        rows.append(row)
    return rows


def _ratio(x, y) -> Optional[float]:
    if x is None or not y:
        return None
    return x / y
