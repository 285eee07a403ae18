"""Serving benchmark: one SGLang server per decoding mode, driven at several concurrencies.

    python bench/serve.py --model PATH [--modes ntp,static:3,conf_adapt:0.9:8,verify:8]
        [--concurrency 1,2,4,8,16] [--prompts FILE|toy] [--num-prompts N]
        [--max-new-tokens N] [--draft-model PATH] [--device cpu|cuda] [--out DIR]
    python bench/serve.py --cpu-smoke          # CPU preset: tiny random model, few prompts
    python bench/serve.py --cpu-smoke --model toy   # CPU preset on the toy MTP model + toy prompts
    python bench/serve.py --cpu-smoke --model smollm2   # CPU preset on the adapted SmolLM2-135M

For each mode (``bench/serving/modes.py``) a ``python -m sglang.launch_server`` is started,
waited for (``/health``), warmed up (excluded), then driven with streaming greedy requests
to ``/generate`` at each concurrency, the prefix cache flushed before each level. The server
is stopped (its whole process group) even when a run fails; a failed mode stays in the
results with its error. Writes ``results.json`` (manifest + per-request records +
summaries), ``report.md`` (ratios against ``ntp`` at the same concurrency) and PNG plots.
"""

from __future__ import annotations

import argparse
import os
import asyncio
import json
import shlex
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.serving import client, manifest, modes, prompts, server, stats  # noqa: E402

# ignore_eos: the smoke model has random weights and would often stop after a few tokens.
SMOKE = dict(modes="ntp,static:2,conf_adapt:0.9:4,verify:4", concurrency="1,2,4", num_prompts=6,
             max_new_tokens=32, ignore_eos=True, repeats=3, device="cpu",
             out=ROOT / "bench" / "results" / "serve-cpu-smoke")
# --model toy: the toy MTP model (k_max 8) on its own held-out problems, stopping at EOS.
SMOKE_TOY = dict(SMOKE, modes="ntp,static:3,conf_adapt:0.9:8,verify:8", ignore_eos=False, prompts="toy",
                 out=ROOT / "bench" / "results" / "serve-cpu-toy")
# --model smollm2: SmolLM2-135M-Instruct MTP-adapted by `sglang-mtp smollm2` (k_max 4), on the
# recipe's held-out chat prompts, stopping at <|im_end|>.
SMOKE_SMOLLM2 = dict(SMOKE, modes="ntp,static:2,conf_adapt:0.9:4,verify:4", concurrency="1,4,16",
                     num_prompts=16, max_new_tokens=48, ignore_eos=False, repeats=1, prompts="smollm2",
                     out=ROOT / "bench" / "results" / "serve-cpu-smollm2")
PRESETS = {"toy": SMOKE_TOY, "smollm2": SMOKE_SMOLLM2}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="local HF checkpoint with the <MTP> token; 'toy': the project's toy "
                   "MTP model (built if absent); 'smollm2': SmolLM2-135M adapted by 'sglang-mtp smollm2' "
                   "(an error names that command if absent); with --cpu-smoke and no --model: a tiny "
                   "random model")
    p.add_argument("--modes", default=modes.DEFAULT_MODES, help="comma-separated mode specs (see modes.py)")
    p.add_argument("--concurrency", default="1,2,4,8,16")
    p.add_argument("--prompts", default=str(prompts.DEFAULT_PROMPTS), help="JSONL file, or 'toy'")
    p.add_argument("--prompt-format", default="auto", choices=prompts.FORMATS)
    p.add_argument("--num-prompts", type=int, default=32, help="requests per concurrency level (>= c)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature of every request (0 = greedy; > 0 samples with MTP)")
    p.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=False,
                   help="always generate max-new-tokens (default: stop at EOS)")
    p.add_argument("--warmup", type=int, default=4, help="warm-up requests per mode (excluded)")
    p.add_argument("--repeats", type=int, default=1, help="runs per level; the median-throughput run is kept")
    p.add_argument("--draft-model", help="EAGLE-3 draft checkpoint: adds mode 'eagle3' if not listed")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if a GPU is seen")
    p.add_argument("--server-args", default="", help="extra launch_server flags, one quoted string")
    p.add_argument("--start-timeout", type=float, default=900.0, help="seconds to wait for /health")
    p.add_argument("--out", type=Path, default=None, help="output folder (default bench/results/serve-<stamp>)")
    p.add_argument("--cpu-smoke", action="store_true", help="CPU preset: " + ", ".join(
        f"{k}={v}" for k, v in SMOKE.items() if k != "out"))
    return p


def resolve_args(args: argparse.Namespace, argv) -> argparse.Namespace:
    """Apply the CPU preset (flags given explicitly still win) and the defaults that need probing."""
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    given |= {g[3:] for g in given if g.startswith("no_")}  # --no-ignore-eos
    if args.cpu_smoke:
        for key, value in PRESETS.get(args.model, SMOKE).items():
            if key not in given:
                setattr(args, key, value)
    if args.model == "toy":
        from sglang_mtp.toy import ensure_toy_model  # builds it on first use (up to ~30 min on CPU)
        args.model = ensure_toy_model()
        if "prompts" not in given:
            args.prompts = "toy"
    elif args.model == "smollm2":
        from sglang_mtp.recipe import adapted_model  # FileNotFoundError: run `sglang-mtp smollm2`
        args.model = adapted_model()
        if "prompts" not in given:
            args.prompts = "smollm2"
    if args.device is None:
        args.device = "cuda" if manifest.gpus() else "cpu"
    if args.out is None:
        args.out = ROOT / "bench" / "results" / time.strftime("serve-%Y%m%d-%H%M%S")
    args.mode_list = modes.parse_modes(args.modes)
    if args.draft_model and not any(m.kind == "eagle3" for m in args.mode_list):
        args.mode_list.append(modes.parse_mode("eagle3"))
    for m in args.mode_list:
        m.server_flags(args.draft_model)  # fail now (e.g. eagle3 without --draft-model), not mid-run
    args.levels = modes.parse_concurrency(args.concurrency)
    if min(args.num_prompts, args.max_new_tokens, args.repeats) < 1:
        raise ValueError("--num-prompts, --max-new-tokens and --repeats must be >= 1")
    if not 0.0 <= args.temperature < float("inf"):
        raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    return args


def smoke_model() -> str:
    """A tiny random-weight Llama with the <MTP> token (speed plumbing only, no accuracy),
    built once under ``artifacts/`` (git-ignored) with the test suite's model helpers."""
    from tests.models import save_checkpoint, tiny_mtp_model

    path = ROOT / "artifacts" / "bench" / "tiny-random-mtp-llama"
    if not (path / "config.json").is_file():
        model, _ = tiny_mtp_model("llama", max_position_embeddings=2048)
        save_checkpoint(path, model)
    return str(path)


def build_payloads(args, prompt_list, tokenizer):
    """The prompt format used and one ``/generate`` body per prompt."""
    fmt = prompts.resolve_format(args.prompt_format, args.prompts,
                                 bool(getattr(tokenizer, "chat_template", None)))
    texts = [prompts.format_prompt(p, fmt, tokenizer) for p in prompt_list]
    body = [client.generate_payload(t, args.max_new_tokens, args.ignore_eos, args.temperature) for t in texts]
    return fmt, body


def run_level(srv, payloads, prompt_list, level: int, n: int) -> dict:
    """One (mode, concurrency) run: flush the prefix cache, send max(n, level) requests (cycling
    the prompts when there are fewer), grade the answers."""
    flushed = srv.post("/flush_cache?timeout=30")  # waits for requests still finishing
    picks = [i % len(payloads) for i in range(max(n, level))]
    results, wall = asyncio.run(client.run_load(srv.url, [payloads[i] for i in picks], level))
    for r, i in zip(results, picks):
        r.index = i
        if r.ok:
            r.correct = prompts.is_correct(r.text, prompt_list[i].answer)
    return {"requests": [r.to_json() for r in results], "wall_s": wall, "cache_flushed": flushed}


def median_repeat(srv, payloads, prompt_list, level: int, args, kind: str) -> dict:
    """``--repeats`` runs of one level; keeps the run with the median throughput (all
    throughputs are recorded), which damps bursts of load from other processes."""
    reps = []
    for _ in range(args.repeats):
        rep = run_level(srv, payloads, prompt_list, level, args.num_prompts)
        rep["summary"] = stats.summarize(rep["requests"], rep["wall_s"], kind)
        reps.append(rep)
    tput = [r["summary"]["throughput"] or 0.0 for r in reps]
    kept = reps[stats.median_index(tput)]
    kept["repeat_throughputs"] = tput
    return kept


def run_one_level(srv, mode, level: int, args, payloads, prompt_list) -> dict:
    """The run record of one (mode, concurrency); failed when the server died or no request
    completed."""
    run = {"mode": mode.spec, "concurrency": level, "status": "ok", "error": None}
    run.update(median_repeat(srv, payloads, prompt_list, level, args, mode.kind))
    if not srv.alive():
        run["status"], run["error"] = "failed", "server died during the run\n" + srv.log_tail(20)
    elif run["summary"]["completed"] == 0:
        run["status"], run["error"] = "failed", "every request failed: " + "; ".join(run["summary"]["errors"])
    _print_summary(run)
    return run


def run_mode(mode, args, payloads, prompt_list, log_dir: Path) -> tuple:
    """Start the server for ``mode``, run every level, stop it. Returns (mode record, runs)."""
    port = server.free_port()
    cmd = server.server_command(args.model, port, mode.server_flags(args.draft_model), args.device,
                                shlex.split(args.server_args))
    record = {"mode": mode.spec, "kind": mode.kind, "status": "ok", "error": None, "server_cmd": cmd,
              "log": str(log_dir / (mode.spec.replace(":", "_") + ".log"))}
    runs = []
    # On a CPU, torch's intra-op threads stall whenever another process holds a core (2-core
    # machines swing 10-70x); one thread per server keeps the modes comparable.
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")} if args.device == "cpu" else None
    srv = server.Server(cmd, port, Path(record["log"]), env=env)
    try:
        srv.start()
        record["startup_s"] = srv.wait_healthy(args.start_timeout)
        record["server_info"] = srv.get_json("/get_server_info")
        if args.warmup:  # full-length requests, batched: the first real requests pay nothing extra
            warm = [payloads[i % len(payloads)] for i in range(args.warmup)]
            asyncio.run(client.run_load(srv.url, warm, min(len(warm), max(args.levels))))
        for level in args.levels:
            print(f"[{mode.spec}] concurrency {level} ...", flush=True)
            run = run_one_level(srv, mode, level, args, payloads, prompt_list)
            runs.append(run)
            if run["status"] != "ok" and record["status"] == "ok":
                record["status"], record["error"] = "failed", run["error"]
            if not srv.alive():
                raise server.ServerError(run["error"])
    except Exception as e:  # the mode is reported as failed, the benchmark goes on
        record["status"], record["error"] = "failed", f"{type(e).__name__}: {e}"
        print(f"[{mode.spec}] FAILED: {record['error'][:2000]}", flush=True)
        done = {r["concurrency"] for r in runs}
        runs += [{"mode": mode.spec, "concurrency": c, "status": "failed", "error": record["error"]}
                 for c in args.levels if c not in done]
    finally:
        srv.stop()
    return record, runs


def _print_summary(run) -> None:
    s = run["summary"]
    fmt = lambda v, f="{:.2f}": "n/a" if v is None else f.format(v)  # noqa: E731
    print(f"  ok {s['completed']}/{s['requests']}  {fmt(s['throughput'], '{:.1f}')} tok/s  "
          f"per-user {fmt(s['per_user_tps_median'], '{:.1f}')} tok/s  p50 {fmt(s['latency_p50'])} s  "
          f"ttft {fmt(s['ttft_p50'], '{:.3f}')} s  eff.k {fmt(s['effective_k'])}  "
          f"acc {fmt(s['accuracy'])}", flush=True)


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # so every `finally` stops its server


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = resolve_args(build_parser().parse_args(argv), argv)
        prompt_list = prompts.load_prompts(args.prompts)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        if not args.cpu_smoke:
            raise SystemExit("--model is required (or --cpu-smoke)")
        args.model = smoke_model()
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    fmt, payloads = build_payloads(args, prompt_list, tokenizer)
    public_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("mode_list", "levels")}
    prompts_info = {"source": args.prompts, "count": len(prompt_list), "format": fmt,
                    "sha256": prompts.prompts_sha256(prompt_list), "first_request_text": payloads[0]["text"]}
    result = {"manifest": manifest.build_manifest(public_args, args.model, prompts_info),
              "notes": {"prefix_cache": "flushed before each concurrency level",
                        "sampling": (f"temperature {args.temperature}" if args.temperature > 0 else
                                     "greedy (temperature 0)") + ", streamed /generate, no MTP request fields",
                        "requests_per_level": f"max(num_prompts, concurrency) = max({args.num_prompts}, c)"},
              "modes": [], "runs": []}
    out_json = args.out / "results.json"
    try:
        for mode in args.mode_list:
            record, runs = run_mode(mode, args, payloads, prompt_list, args.out / "logs")
            result["modes"].append(record)
            result["runs"] += runs
            out_json.write_text(json.dumps(result, indent=1))  # partial results survive a crash
    finally:
        out_json.write_text(json.dumps(result, indent=1))
        report.write_report(result, args.out)
        print(f"results: {out_json}\nreport: {args.out / 'report.md'}")
    return 0 if all(m["status"] == "ok" for m in result["modes"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
