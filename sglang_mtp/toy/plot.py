"""Accuracy vs. effective k (the paper's Pareto view) as a PNG, drawn with Pillow only."""

from __future__ import annotations

W, H = 720, 480
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 40, 60
COLORS = {"static": (214, 39, 40), "conf_adapt": (31, 119, 180), "verify": (44, 160, 44),
          "ntp": (0, 0, 0)}


def _series(rows):
    """Group rows by strategy kind (MTP model) and the teacher baseline."""
    groups = {}
    for r in rows:
        kind = r["strategy"].split(":")[0]
        if r["model"] == "teacher":
            if kind != "ntp":
                continue  # the untrained-mask row is off the chart's purpose
            key = "teacher ntp"
        else:
            key = f"mtp {kind}"
        groups.setdefault(key, []).append((r["effective_k"], 100 * r["accuracy"], r["strategy"]))
    return {k: sorted(v) for k, v in groups.items()}


def pareto_png(rows, path, title="Toy task: accuracy vs. effective k"):
    """Write the plot of ``rows`` (from :func:`~sglang_mtp.toy.evaluate.evaluate`) to ``path``."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    groups = _series(rows)
    xs = [p[0] for g in groups.values() for p in g] or [1.0]
    x_max = max(2.0, float(int(max(xs)) + 1))
    to_px = lambda x, y: (LEFT + (x - 1) / (x_max - 1) * (W - LEFT - RIGHT),  # noqa: E731
                          H - BOTTOM - y / 100 * (H - TOP - BOTTOM))
    _axes(d, to_px, x_max)
    d.text((LEFT, 12), title, fill="black")
    for n, (name, pts) in enumerate(sorted(groups.items())):
        color = COLORS[name.split()[1]]
        px = [to_px(x, y) for x, y, _ in pts]
        if len(px) > 1:
            d.line(px, fill=color, width=2)
        for (x, y), (_, _, spec) in zip(px, pts):
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
            d.text((x + 5, y - 12), spec.split(":")[1] if ":" in spec else "", fill=color)
        ly = TOP + 20 * n
        d.rectangle([W - RIGHT + 15, ly + 2, W - RIGHT + 25, ly + 12], fill=color)
        d.text((W - RIGHT + 30, ly), name, fill="black")
    img.save(path)
    return path


def _axes(d, to_px, x_max):
    x0, y0 = to_px(1, 0)
    x1, y1 = to_px(x_max, 100)
    d.line([(x0, y0), (x1, y0)], fill="black")
    d.line([(x0, y0), (x0, y1)], fill="black")
    for k in range(1, int(x_max) + 1):
        x, _ = to_px(k, 0)
        d.line([(x, y0), (x, y0 + 5)], fill="black")
        d.text((x - 3, y0 + 8), str(k), fill="black")
    for acc in range(0, 101, 20):
        _, y = to_px(1, acc)
        d.line([(x0 - 5, y), (x0, y)], fill="black")
        d.line([(x0 + 1, y), (x1, y)], fill=(225, 225, 225))
        d.text((x0 - 30, y - 6), f"{acc}", fill="black")
    d.text(((x0 + x1) / 2 - 80, y0 + 30), "effective k (tokens / forward pass)", fill="black")
    d.text((8, (y0 + y1) / 2), "acc %", fill="black")
