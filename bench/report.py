"""Tables and plots from a serving-benchmark ``results.json`` (written by ``bench/serve.py``).

    python bench/report.py bench/results/serve-.../results.json [--out DIR] [--baseline ntp]

Writes ``report.md`` (manifest summary + one table with ratios against the baseline mode at
the same concurrency; failed modes are listed with their error) and, when matplotlib is
installed, ``per_user_tps.png`` (per-user tokens/s vs concurrency), ``throughput.png`` and
``accuracy_vs_speedup.png`` (accuracy vs per-user speed-up at the lowest concurrency).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serving.stats import pick_baseline, ratio_rows  # noqa: E402

COLUMNS = ("mode", "c", "ok", "tok/s (all)", "x base", "per-user tok/s (p50)", "x base",
           "latency p50 (s)", "TTFT p50 (s)", "eff. k", "accuracy")


def _f(value, spec: str = "{:.2f}") -> str:
    return "-" if value is None else spec.format(value)


def _row_cells(row: dict) -> List[str]:
    if row["status"] != "ok":
        error = (row.get("error") or "unknown error").splitlines()[0][:120].replace("|", "/")
        return [row["mode"], str(row["concurrency"]), f"FAILED: {error}"] + ["-"] * (len(COLUMNS) - 3)
    acc = "-" if row.get("accuracy") is None else f"{row['accuracy']:.1%} (n={row['graded']})"
    ok = f"{row['completed']}/{row['requests']}"
    return [row["mode"], str(row["concurrency"]), ok, _f(row["throughput"], "{:.1f}"),
            _f(row["throughput_ratio"], "{:.2f}x"), _f(row["per_user_tps_median"], "{:.1f}"),
            _f(row["per_user_ratio"], "{:.2f}x"), _f(row["latency_p50"]), _f(row["ttft_p50"], "{:.3f}"),
            _f(row["effective_k"]), acc]


def markdown_table(rows: List[dict]) -> str:
    """The result table (rows from ``stats.ratio_rows``), grouped by concurrency."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in sorted(rows, key=lambda r: r["concurrency"]):  # stable: mode order kept
        lines.append("| " + " | ".join(_row_cells(row)) + " |")
    return "\n".join(lines)


def manifest_lines(m: dict) -> List[str]:
    hw, v, model, pr = m["hardware"], m["versions"], m["model"], m["prompts"]
    args = m.get("args", {})
    return [
        f"Machine: **{hw['label']}** ({hw['platform']}, Python {hw['python']})",
        f"Software: torch {v.get('torch')} (CUDA {v.get('torch_cuda')}), sglang {v.get('sglang')}, "
        f"sglang-mtp {v.get('sglang-mtp')} (commit {str(m['repo'].get('commit'))[:12]}"
        f"{', dirty' if m['repo'].get('dirty') else ''})",
        f"Model: `{model['path']}` ({model.get('model_type', '?')}, mask id "
        f"{model.get('mtp_mask_token_id', '-')}, mtp_trained={model.get('mtp_trained', '-')})",
        f"Prompts: {pr['source']} ({pr['count']} prompts, format {pr['format']}, sha256 {pr['sha256'][:16]}...)",
        f"Requests: {_sampling(args)}, max_new_tokens={args.get('max_new_tokens')}, {args.get('num_prompts')} "
        f"per concurrency level (median-throughput run of {args.get('repeats', 1)}), "
        f"ignore_eos={args.get('ignore_eos')}, device={args.get('device')}",
        f"Date: {m['created_utc']}",
    ]


def write_report(result: dict, out_dir, baseline: str = "ntp") -> Path:
    """Write report.md (and the PNG plots when matplotlib is available); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [m["mode"] for m in result.get("modes", [])]
    base = pick_baseline(names, baseline)
    rows = ratio_rows(result.get("runs", []), base)
    lines = ["# Serving benchmark", ""] + [f"- {line}" for line in manifest_lines(result["manifest"])]
    lines += ["", f"Ratios (x base) are against `{base}` at the same concurrency." if base
              else "No baseline mode ran: no ratios."]
    if result["manifest"].get("args", {}).get("device") == "cpu":
        lines += ["CPU run: timings on a few shared cores are indicative only (other processes "
                  "compete for them); the eff. k and accuracy columns do not depend on timing."]
    lines += ["", markdown_table(rows), ""]
    failed = [m for m in result.get("modes", []) if m["status"] != "ok"]
    if failed:
        lines += ["## Failed modes", ""]
        for m in failed:
            lines += [f"- `{m['mode']}` (log `{m.get('log')}`):", "", "```", str(m["error"])[-3000:], "```", ""]
    lines += ["Effective k = output tokens / server-reported forward passes ('-' where the server "
              "reports none). Per-user tok/s = a request's output tokens / its end-to-end latency. "
              "TTFT: each mode's server ran on its own, one after another, so a TTFT difference between "
              "modes includes the machine's drift between their runs; `bench/ttft.py` measures TTFT paired.", ""]
    plots = write_plots(rows, out_dir, base)
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plots(rows: List[dict], out_dir: Path, base: Optional[str]) -> List[Path]:
    """PNG plots; returns the files written (none when matplotlib is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib is not installed, skipping the plots", file=sys.stderr)
        return []
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    written = [_line_plot(plt, ok, key, ylabel, out_dir / name, base)
               for key, ylabel, name in (("per_user_tps_median", "per-user tokens/s (median)", "per_user_tps.png"),
                                         ("throughput", "total output tokens/s", "throughput.png"))]
    accuracy = _accuracy_plot(plt, ok, out_dir / "accuracy_vs_speedup.png", base)
    return written + ([accuracy] if accuracy else [])


def _line_plot(plt, ok: List[dict], key: str, ylabel: str, path: Path, base) -> Path:
    """One line per mode: ``key`` against concurrency (log2 axis)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in dict.fromkeys(r["mode"] for r in ok):
        pts = sorted((r["concurrency"], r[key]) for r in ok if r["mode"] == mode and r[key] is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=mode, linestyle="--" if mode == base else "-")
    levels = sorted({r["concurrency"] for r in ok})
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.minorticks_off()
    ax.set(xlabel="concurrency", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _accuracy_plot(plt, ok: List[dict], path: Path, base) -> Optional[Path]:
    """Accuracy vs per-user speed-up at the lowest concurrency (None without accuracy data)."""
    level = min(r["concurrency"] for r in ok)
    pts = [(r["per_user_ratio"], r["accuracy"], r["mode"]) for r in ok
           if r["concurrency"] == level and r["per_user_ratio"] is not None and r["accuracy"] is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for x, y, mode in pts:
        ax.scatter([x], [y])
        ax.annotate(mode, (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel=f"per-user speed-up vs {base} (concurrency {level})", ylabel="accuracy (exact match)",
           ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Rebuild report.md and plots from a results.json")
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, default=None, help="default: the results file's folder")
    p.add_argument("--baseline", default="ntp")
    args = p.parse_args(argv)
    result = json.loads(args.results.read_text())
    print(write_report(result, args.out or args.results.parent, args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _sampling(args) -> str:
    t = args.get("temperature") or 0.0
    return f"sampled at temperature {t:g} (no seed)" if t > 0 else "greedy"
