"""Markdown tables for ``bench/step_cost.py`` results (also: ``python bench/step_cost_report.py
results.json`` rebuilds them from the JSON).

Per model: (1) the "free lunch" curve, time(W)/time(1) per (batch, ctx); (2) the predicted
speed-up ceiling effective_k * time(1)/time(W) for the widths of k_max 8 and 16 (W = 15, 31)
and each effective k given; (3) the fused confidence_scan's cost per step; (4) the lm_head over
all W rows vs the block rows a lossy strategy reads.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple


def by_shape(points: List[dict]) -> Dict[Tuple[int, int], Dict[int, dict]]:
    """{(batch, ctx): {width: point}} in measurement order."""
    table: Dict[Tuple[int, int], Dict[int, dict]] = defaultdict(dict)
    for p in points:
        table[(p["batch"], p["ctx"])][p["width"]] = p
    return table


def free_lunch(points: List[dict]) -> List[dict]:
    """One row per (batch, ctx): t(1) and the ratio t(W)/t(1) for every measured W > 1."""
    rows = []
    for (batch, ctx), cells in by_shape(points).items():
        base = cells.get(1)
        if base is None:
            continue
        ratios = {w: p["seconds"] / base["seconds"] for w, p in sorted(cells.items()) if w > 1}
        rows.append(dict(batch=batch, ctx=ctx, t1=base["seconds"], floor=base["floor_s"], ratios=ratios))
    return rows


def ceilings(points: List[dict], effective_k: List[float], widths=(15, 31)) -> List[dict]:
    """Predicted speed-up ceiling per (batch, ctx, W): eff_k * t(1) / t(W), for each eff_k."""
    rows = []
    for (batch, ctx), cells in by_shape(points).items():
        if 1 not in cells:
            continue
        for w in widths:
            if w in cells:
                speed = cells[1]["seconds"] / cells[w]["seconds"]
                rows.append(dict(batch=batch, ctx=ctx, width=w, k_max=(w + 1) // 2,
                                 ceiling={k: k * speed for k in effective_k}))
    return rows


def _model_section(name: str, m: dict, effective_k: List[float], graphs_on: bool) -> List[str]:
    pts = m["points"]
    lines = [f"### {name}", "",
             f"{m['weight_bytes'] / 1e9:.2f} GB of weights; measured copy bandwidth "
             f"{m['copy_bandwidth_gbs']:.0f} GB/s; weight-read floor {m['weight_floor_s'] * 1e3:.2f} ms; "
             f"W-wide vs one-token check: max rel. diff {m['check_rel_diff']:.1e}; "
             f"attention: {m.get('attention', '?')}"
             + ("; **grid cut short by the time budget**" if m.get("truncated") else ""), ""]
    graphed = sum(bool(p.get("graph")) for p in pts)
    if graphs_on and graphed < len(pts):
        lines += [f"CUDA graphs used for {graphed} of {len(pts)} points (the rest timed eagerly).", ""]
    rows = free_lunch(pts)
    widths = sorted({w for r in rows for w in r["ratios"]})
    if not rows:
        return lines + ["(no points measured)", ""]
    lines += ["time(W) / time(1) (the \"free lunch\": ~1.0 while decoding is memory-bound):", "",
              "| batch | ctx | t(1) ms | floor ms | " + " | ".join(f"W={w}" for w in widths) + " |",
              "|" + "---|" * (4 + len(widths))]
    for r in rows:
        cells = [f"{r['ratios'][w]:.2f}" if w in r["ratios"] else "-" for w in widths]
        lines.append(f"| {r['batch']} | {r['ctx']} | {r['t1'] * 1e3:.2f} | {r['floor'] * 1e3:.2f} | "
                     + " | ".join(cells) + " |")
    ceil = ceilings(pts, effective_k)
    if ceil:
        lines += ["", "Predicted speed-up ceiling = effective k x time(1)/time(W) (W = 2 k_max - 1):", "",
                  "| batch | ctx | k_max (W) | " + " | ".join(f"eff. k {k}" for k in effective_k) + " |",
                  "|" + "---|" * (3 + len(effective_k))]
        for r in ceil:
            lines.append(f"| {r['batch']} | {r['ctx']} | {r['k_max']} ({r['width']}) | "
                         + " | ".join(f"{r['ceiling'][k]:.2f}x" for k in effective_k) + " |")
    scans = [p for p in pts if p["width"] > 1 and p["scan_seconds"] is not None]
    notes = sorted({p["scan_note"] for p in pts if p.get("scan_note")})
    if scans:
        lines += ["", "confidence_scan per step (float32 logits [batch*W, vocab]):", "",
                  "| batch | W | scan us | % of forward (ctx) |", "|---|---|---|---|"]
        for (batch, width), group in _group(scans).items():
            share = ", ".join(f"{100 * p['scan_seconds'] / p['seconds']:.1f}% ({p['ctx']})" for p in group)
            lines.append(f"| {batch} | {width} | {group[0]['scan_seconds'] * 1e6:.1f} | {share} |")
    heads = [p for p in pts if p.get("lm_head_all_s") is not None]
    if heads:
        lines += ["", "lm_head over all W rows vs the (W+1)/2 block rows per request a lossy strategy reads "
                  "(gathered; the saving a row subset would bring, as a share of the forward):", "",
                  "| batch | W | all rows us | block rows us | saving, % of forward (ctx) |", "|---|---|---|---|---|"]
        for (batch, width), group in _group(heads).items():
            share = ", ".join(f"{lm_head_saving(p):.1f}% ({p['ctx']})" for p in group)
            lines.append(f"| {batch} | {width} | {group[0]['lm_head_all_s'] * 1e6:.1f} | "
                         f"{group[0]['lm_head_block_s'] * 1e6:.1f} | {share} |")
    lines += [""] + [f"Note: {n}" for n in notes] + ([""] if notes else [])
    return lines


def lm_head_saving(point: dict) -> float:
    """Percent of the point's forward a lossy step would save with the lm_head over its block
    rows only (negative: the gather costs more than the rows it saves)."""
    return 100 * (point["lm_head_all_s"] - point["lm_head_block_s"]) / point["seconds"]


def _group(points):
    out = defaultdict(list)
    for p in points:
        out[(p["batch"], p["width"])].append(p)
    return out


def markdown(result: dict) -> str:
    """The whole report for one step_cost run."""
    m = result["manifest"]
    v = m["versions"]
    lines = ["## Step cost: one decode forward of W query tokens vs one", "",
             f"Machine: **{m['hardware']['label']}**; torch {v.get('torch')} (CUDA {v.get('torch_cuda')}); "
             f"device {m['device']}, {m['dtype']}, CUDA graphs {'on' if m['cuda_graphs'] else 'off'}; "
             "random weights, static KV cache of `ctx` tokens (bench/static_decoder.py).", "",
             f"Command: `{m['command']}`", ""]
    for name, model in result["models"].items():
        lines += _model_section(name, model, m["effective_k"], m["cuda_graphs"])
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1])
    print(markdown(json.loads(path.read_text())))
