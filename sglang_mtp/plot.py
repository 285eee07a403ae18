"""PNG plots drawn with Pillow only: a quality metric vs. effective k (the paper's Pareto
view, :func:`pareto_png`) and effective k vs. training step (:func:`curve_png`)."""

from __future__ import annotations

W, H = 720, 480
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 56, 60
COLORS = {"static": (214, 39, 40), "conf_adapt": (31, 119, 180), "verify": (44, 160, 44),
          "ntp": (0, 0, 0)}


LABELS = {"accuracy": "accuracy %", "same_as_teacher": "same as teacher's greedy %",
          "same_as_own_greedy": "same as own greedy %"}


def _series(rows, metric="accuracy"):
    """Group rows by strategy kind (MTP model) and the teacher baseline."""
    groups = {}
    for r in rows:
        kind = r["strategy"].split(":")[0]
        if r["model"] == "teacher":
            if kind != "ntp":
                continue  # the untrained-mask row is off the chart's purpose
            key = "teacher ntp"
        else:
            key = f"{r['model'].upper()} {kind}"
        groups.setdefault(key, []).append((r["effective_k"], 100 * r[metric], r["strategy"]))
    return {k: sorted(v) for k, v in groups.items()}


def _color(name):
    """The strategy kind's colour; lighter for an intermediate checkpoint ("MTP@200 ...")."""
    model, kind = name.split()
    color = COLORS[kind]
    if "@" in model:
        color = tuple(int(c + (255 - c) * 0.55) for c in color)
    return color


def _canvas():
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    try:
        d.font = ImageFont.load_default(size=13)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        pass
    return img, d


def pareto_png(rows, path, title="Toy task: accuracy vs. effective k", metric="accuracy"):
    """Write the plot of ``rows`` (from :func:`sglang_mtp.evaluate.evaluate`) to ``path``;
    ``metric``: the row field on the y axis (a fraction)."""
    img, d = _canvas()
    groups = _series(rows, metric)
    xs = [p[0] for g in groups.values() for p in g] or [1.0]
    ys = [p[1] for g in groups.values() for p in g] or [0.0]
    x_max = max(2.0, float(int(max(xs)) + 1))
    y_min = max(0.0, 10 * (int(min(ys)) // 10 - 1))  # zoom in when every row is accurate
    to_px = lambda x, y: (LEFT + (x - 1) / (x_max - 1) * (W - LEFT - RIGHT),  # noqa: E731
                          H - BOTTOM - (y - y_min) / (100 - y_min) * (H - TOP - BOTTOM))
    _axes(d, to_px, x_max, y_min, LABELS.get(metric, metric))
    d.text((LEFT, 8), title, fill="black")
    for n, (name, pts) in enumerate(sorted(groups.items())):
        color = _color(name)
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


def _axes(d, to_px, x_max, y_min, y_label="accuracy %"):
    x0, y0 = to_px(1, y_min)
    x1, y1 = to_px(x_max, 100)
    d.line([(x0, y0), (x1, y0)], fill="black")
    d.line([(x0, y0), (x0, y1)], fill="black")
    for k in range(1, int(x_max) + 1):
        x, _ = to_px(k, y_min)
        d.line([(x, y0), (x, y0 + 5)], fill="black")
        d.text((x - 3, y0 + 8), str(k), fill="black")
    step = 20 if y_min < 50 else (10 if y_min < 80 else 2)
    for acc in range(int(y_min), 101, step):
        _, y = to_px(1, acc)
        d.line([(x0 - 5, y), (x0, y)], fill="black")
        d.line([(x0 + 1, y), (x1, y)], fill=(225, 225, 225))
        d.text((x0 - 30, y - 6), f"{acc}", fill="black")
    d.text(((x0 + x1) / 2 - 80, y0 + 30), "effective k (tokens / forward pass)", fill="black")
    d.text((x0 - 40, y1 - 24), y_label, fill="black")


def curve_png(points, path, title="Learning curve on held-out prompts"):
    """Effective k vs. training step, one line per strategy (``points`` from
    :func:`sglang_mtp.recipe.evaluate.learning_curve`), written to ``path``."""
    img, d = _canvas()
    steps = sorted({p["step"] for p in points}) or [0]
    ks = [p["effective_k"] for p in points] or [1.0]
    s_max, k_max = max(steps[-1], 1), max(1.5, round(max(ks) + 0.25, 1))
    to_px = lambda s, k: (LEFT + s / s_max * (W - LEFT - RIGHT),  # noqa: E731
                          H - BOTTOM - (k - 1) / (k_max - 1) * (H - TOP - BOTTOM))
    x0, y0 = to_px(0, 1)
    x1, y1 = to_px(s_max, k_max)
    d.line([(x0, y0), (x1, y0)], fill="black")
    d.line([(x0, y0), (x0, y1)], fill="black")
    for s in steps:
        d.text((to_px(s, 1)[0] - 8, y0 + 8), str(s), fill="black")
    for i in range(int(round((k_max - 1) / 0.1)) + 1):
        k = 1 + 0.1 * i
        if i % 2 == 0:
            d.text((x0 - 34, to_px(0, k)[1] - 6), f"{k:.1f}", fill="black")
            d.line([(x0 + 1, to_px(0, k)[1]), (x1, to_px(0, k)[1])], fill=(225, 225, 225))
    d.text(((x0 + x1) / 2 - 40, y0 + 30), "training step", fill="black")
    d.text((x0 - 40, y1 - 24), "effective k", fill="black")
    d.text((LEFT, 8), title, fill="black")
    for n, spec in enumerate(dict.fromkeys(p["strategy"] for p in points)):
        color = COLORS[spec.split(":")[0]]
        px = [to_px(p["step"], p["effective_k"]) for p in points if p["strategy"] == spec]
        if len(px) > 1:
            d.line(px, fill=color, width=2)
        for x, y in px:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        ly = TOP + 20 * n
        d.rectangle([W - RIGHT + 15, ly + 2, W - RIGHT + 25, ly + 12], fill=color)
        d.text((W - RIGHT + 30, ly), spec, fill="black")
    img.save(path)
    return path
