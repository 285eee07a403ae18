"""Step-cost benchmark: what one decode forward of W = 2k-1 query tokens costs vs W = 1.

    python bench/step_cost.py [--models llama-3.1-8b,qwen3-4b] [--config config.json ...]
        [--batch 1,4,16] [--ctx 512,2048,8192] [--k 1,2,3,4,6,8,12,16] [--grid full]
        [--effective-k 3.3,3.1] [--budget-s 220] [--out bench/results]
    python bench/step_cost.py --smoke          # tiny config on the CPU (checks the script)

Needs PyTorch only (no SGLang, no download): the model is built from its config with random
bf16 weights (``bench/static_decoder.py``) and a preallocated KV cache of ``ctx`` committed
tokens. Each (batch, ctx, W) forward is checked (a W-wide forward equals W one-token
forwards), then captured in a CUDA graph and timed (warm-up, repeats, median of CUDA-event
timings). Also times ``sglang_mtp.ops.confidence_scan`` on the step's float32 logits
[batch*W, vocab], the lm_head over all batch*W rows against the (W+1)/2 block rows per request
a lossy strategy reads (what a row subset would save), and measures the memory-bandwidth
floor: (weight bytes [+ KV bytes read]) / device copy bandwidth. Output: JSON + markdown with the "free lunch" curve
time(W)/time(1) and the predicted speed-up ceiling effective_k * time(1)/time(W).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import step_cost_report  # noqa: E402
from bench.serving.manifest import hardware, versions  # noqa: E402
from bench.static_decoder import DecoderConfig, StaticDecoder  # noqa: E402

CONFIGS = {  # the architecture fields of the public config.json files
    "llama-3.1-8b": dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False),
    "qwen3-4b": dict(model_type="qwen3", vocab_size=151936, hidden_size=2560, intermediate_size=9728,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     rms_norm_eps=1e-6, rope_theta=5000000.0, tie_word_embeddings=True),
    "tiny": dict(model_type="qwen3", vocab_size=512, hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 tie_word_embeddings=True),
}
GRIDS = {
    "default": dict(batch="1,4,16", ctx="512,2048,8192", k="1,2,3,4,6,8,12,16"),
    "full": dict(batch="1,2,4,8,16", ctx="512,2048,8192", k=",".join(str(k) for k in range(1, 17))),
    "smoke": dict(batch="1,2", ctx="32,64", k="1,2,4"),
}
PAPER_EFFECTIVE_K = "3.3,3.1"  # ConfAdapt tau=0.9: L3.1-8B GSM8K 3.3, Qwen3-4B GSM8K 3.1


def ints(text: str, name: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--{name} needs integers >= 1, got {text!r}")
    return values


def build_model(cfg: DecoderConfig, device: str, dtype: torch.dtype, max_positions: int) -> StaticDecoder:
    """Random weights allocated directly in ``dtype`` on the device (built on the meta device
    first: an 8B model never exists in float32); std 0.02 keeps bf16 activations finite."""
    with torch.device("meta"):
        model = StaticDecoder(cfg, max_positions).eval()
    model = model.to(dtype).to_empty(device=device)
    model.reset_rope()
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model


def time_fn(fn, device: str, graphs: bool, min_reps: int = 10, rounds: int = 5) -> tuple:
    """Median seconds per call of ``fn`` and whether a CUDA graph was used."""
    if device != "cuda":  # shared CPUs are noisy: at least 10 calls and 0.1 s, take the median
        fn()
        times, t_end = [], time.perf_counter() + 0.1
        while len(times) < 10 or (time.perf_counter() < t_end and len(times) < 200):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), False
    graph = None
    if graphs:
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn(), fn()  # warm-up outside the graph (cuBLAS/flash workspace selection)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            run = graph.replay
        except RuntimeError as e:  # capture failed: time eagerly and say so
            print(f"  CUDA graph capture failed ({e}); timing eagerly", flush=True)
            graph, run = None, fn
    else:
        run = fn
    for _ in range(3):
        run()
    times, start, stop = [], torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(rounds):
        start.record()
        for _ in range(min_reps // rounds + 1):
            run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e-3 / (min_reps // rounds + 1))
    del graph
    return statistics.median(times), graphs and run is not fn


def copy_bandwidth(device: str) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), 1 GiB buffers on GPU."""
    n = (1 << 28) if device == "cuda" else (1 << 24)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    t, _ = time_fn(lambda: dst.copy_(src), device, graphs=False)
    return 2 * src.numel() * src.element_size() / t / 1e9


def check_wide_forward(cfg: DecoderConfig, batch: int, ctx: int, width: int, device: str,
                       dtype: torch.dtype, expand_kv: bool = False) -> float:
    """Max |logit difference| between one W-wide forward and W one-token forwards, relative
    to the logits' scale, on a 2-layer model with the same shapes (same kernels, less rounding
    drift). Catches a wrong causal alignment or cache write."""
    model = build_model(replace(cfg, num_hidden_layers=min(2, cfg.num_hidden_layers)), device, dtype,
                        ctx + width + 1)
    model.set_expand_kv(expand_kv)
    ids = torch.randint(0, model.config.vocab_size, (batch, width), device=device)
    caches = model.allocate_cache(batch, ctx + width)
    for k_cache, v_cache in caches:
        k_cache.normal_(), v_cache.normal_()
    with torch.no_grad():
        wide = model(ids, caches, ctx).float()
        steps = torch.cat([model(ids[:, j:j + 1], caches, ctx + j) for j in range(width)], 1).float()
    return ((wide - steps).abs().max() / steps.abs().max().clamp_min(1e-6)).item()


def time_scan(batch: int, width: int, vocab: int, device: str, graphs: bool):
    """Seconds per ``confidence_scan`` on float32 logits [batch*W, vocab] (k = (W+1)/2 rows per
    request); None when the fused op is not available on this device."""
    try:
        from sglang_mtp import ops
    except ImportError as e:
        return None, f"sglang_mtp.ops unavailable: {e}"
    logits = torch.randn(batch * width, vocab, device=device)
    start = torch.arange(batch, dtype=torch.int32, device=device) * width
    length = torch.full((batch,), (width + 1) // 2, dtype=torch.int32, device=device)
    tau = torch.full((batch,), 0.9, device=device)
    stops = torch.tensor([2], device=device)
    fn = lambda: ops.confidence_scan(logits, start, length, tau, stops, vocab - 1)  # noqa: E731
    try:
        fn()
    except (RuntimeError, NotImplementedError) as e:
        return None, f"confidence_scan failed on {device}: {str(e).splitlines()[0]}"
    return time_fn(fn, device, graphs)[0], None


def time_lm_head(model: StaticDecoder, batch: int, width: int, device: str, graphs: bool):
    """Seconds of the step's lm_head over all batch*W rows, and over the (W+1)/2 rows per
    request that a lossy strategy's block can reach, gathered first (issue 13, defect D: the
    plugin computes all W rows; the difference is what a row subset would save)."""
    hidden = torch.randn(batch * width, model.config.hidden_size, device=device, dtype=model.lm_head.weight.dtype)
    block = (width + 1) // 2
    rows = (torch.arange(batch, device=device)[:, None] * width + torch.arange(block, device=device)).reshape(-1)
    with torch.no_grad():
        every, _ = time_fn(lambda: model.lm_head(hidden), device, graphs)
        subset, _ = time_fn(lambda: model.lm_head(hidden.index_select(0, rows)), device, graphs)
    return every, subset


def measure_point(model: StaticDecoder, caches, batch: int, ctx: int, width: int, args) -> dict:
    """Time one forward of [batch, width] tokens after ``ctx`` cached ones (+ the scan, and
    the lm_head over every row vs the block rows)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, width), device=args.device)
    with torch.no_grad():
        t, graphed = time_fn(lambda: model(ids, caches, ctx), args.device, not args.no_graphs)
    scan, note = (None, None) if width == 1 else time_scan(batch, width, model.config.vocab_size,
                                                           args.device, not args.no_graphs)
    every, subset = (None, None) if width == 1 else time_lm_head(model, batch, width, args.device,
                                                                 not args.no_graphs)
    return dict(batch=batch, ctx=ctx, width=width, k=(width + 1) // 2, seconds=t, graph=graphed,
                scan_seconds=scan, scan_note=note, lm_head_all_s=every, lm_head_block_s=subset)


def bench_model(name: str, cfg: DecoderConfig, args, deadline: float) -> dict:
    """Every (batch, ctx, W) point of one model, stopping early at the time budget."""
    widths = [2 * k - 1 for k in args.k_list]
    model = build_model(cfg, args.device, args.dtype, max(args.ctx_list) + max(widths) + 1)
    bw = copy_bandwidth(args.device)
    kv_token_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * args.dtype.itemsize
    shape = (cfg, min(2, max(args.batch_list)), min(args.ctx_list), max(widths), args.device, args.dtype)
    try:
        rel, expand = check_wide_forward(*shape), False
    except RuntimeError as e:  # e.g. no SDPA kernel with native GQA + lower-right causal here
        print(f"{name}: native-GQA attention failed ({str(e).splitlines()[0]}); repeating KV heads", flush=True)
        rel, expand = check_wide_forward(*shape, expand_kv=True), True
    model.set_expand_kv(expand)
    tol = 1e-4 if args.dtype == torch.float32 else 5e-2
    if not rel <= tol:
        raise RuntimeError(f"{name}: W-wide forward disagrees with one-token forwards (rel {rel:.3g})")
    out = {"config": cfg.to_dict(), "weight_bytes": model.weight_bytes(), "copy_bandwidth_gbs": bw,
           "weight_floor_s": model.weight_bytes() / (bw * 1e9), "kv_bytes_per_token": kv_token_bytes,
           "check_rel_diff": rel, "attention": "sdpa, KV heads repeated" if expand else "sdpa, native GQA",
           "points": [], "truncated": False}
    print(f"{name}: {out['weight_bytes'] / 1e9:.2f} GB weights, copy {bw:.0f} GB/s, check rel {rel:.2e}", flush=True)
    for batch in args.batch_list:
        caches = model.allocate_cache(batch, max(args.ctx_list) + max(widths))
        for ctx in args.ctx_list:
            for width in widths:
                if time.monotonic() > deadline:
                    out["truncated"] = True
                    return out
                point = measure_point(model, caches, batch, ctx, width, args)
                point["floor_s"] = (out["weight_bytes"] + batch * (ctx + width) * kv_token_bytes) / (bw * 1e9)
                out["points"].append(point)
            print(f"  batch {batch} ctx {ctx}: t(1) {out['points'][-len(widths)]['seconds'] * 1e3:.2f} ms, "
                  f"t({widths[-1]}) {out['points'][-1]['seconds'] * 1e3:.2f} ms", flush=True)
        del caches
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="llama-3.1-8b,qwen3-4b", help=f"built-in configs: {', '.join(CONFIGS)}")
    p.add_argument("--config", action="append", default=[], help="an HF config.json (repeatable)")
    p.add_argument("--grid", choices=sorted(GRIDS), default="default")
    p.add_argument("--batch"), p.add_argument("--ctx"), p.add_argument("--k")
    p.add_argument("--effective-k", default=PAPER_EFFECTIVE_K)
    p.add_argument("--device", default=None, help="default: cuda when available (smoke: cpu)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
    p.add_argument("--no-graphs", action="store_true", help="time eagerly (no CUDA graphs)")
    p.add_argument("--budget-s", type=float, default=220.0, help="stop the grid after this many seconds")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--smoke", action="store_true", help="tiny config, small grid, CPU, float32")
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.grid = "tiny", "smoke"
        args.device, args.dtype = args.device or "cpu", args.dtype or "float32"
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = getattr(torch, args.dtype or "bfloat16")
    grid = GRIDS[args.grid]
    args.batch_list = ints(args.batch or grid["batch"], "batch")
    args.ctx_list = ints(args.ctx or grid["ctx"], "ctx")
    args.k_list = ints(args.k or grid["k"], "k")
    args.eff_k = [float(v) for v in args.effective_k.split(",") if v.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    models = {}
    for n in filter(None, (m.strip() for m in args.models.split(","))):
        if n not in CONFIGS:
            raise SystemExit(f"--models: unknown config {n!r} (one of {', '.join(CONFIGS)})")
        models[n] = DecoderConfig.from_hf(CONFIGS[n])
    for path in args.config:
        models[Path(path).parent.name or path] = DecoderConfig.from_hf(json.loads(Path(path).read_text()))
    t0 = time.monotonic()
    result = {"manifest": {"hardware": hardware(), "versions": versions(), "device": args.device,
                           "dtype": str(args.dtype).replace("torch.", ""), "cuda_graphs": args.device == "cuda" and not args.no_graphs,
                           "grid": dict(batch=args.batch_list, ctx=args.ctx_list, k=args.k_list),
                           "effective_k": args.eff_k, "command": " ".join(sys.argv)},
              "models": {}}
    for i, (name, cfg) in enumerate(models.items()):
        # each model may use its share of the budget plus whatever earlier models left over
        deadline = t0 + args.budget_s * (i + 1) / len(models)
        result["models"][name] = bench_model(name, cfg, args, deadline)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    label = "smoke-cpu" if args.smoke else args.device
    if args.device == "cuda" and not args.smoke:  # name the GPU in the file name
        label = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"step_cost-{label}.json").write_text(json.dumps(result, indent=1))
    md = step_cost_report.markdown(result)
    (args.out / f"step_cost-{label}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
