"""Paired time-to-first-token benchmark: every mode's server runs at once, requests alternate.

    python bench/ttft.py --cpu-smoke --model toy
    python bench/ttft.py --model /path/ckpt --modes ntp,conf_adapt:0.9:8 --server-args "--disable-overlap-schedule"

Every mode has a server of its own (``plain@SPEC`` too: a second server of mode SPEC whose
requests are all ``{"mtp": false}``), and all start together; then, one request at a time
(concurrency 1), each prompt is sent to every mode in turn (the order rotates from one prompt
to the next) as a streaming ``/generate``. TTFT is the
time to the first streamed chunk; the prefix cache is flushed before each request, so every
request runs its whole prefill. Only the server being measured runs: the others are
stopped (SIGSTOP) while it serves, because idle SGLang schedulers poll. Because neighbouring requests of different modes see the
same machine load, the median of the per-prompt ratios (mode / ntp) is robust to the noise
that swings sequential runs on a small CPU.

Pairing does not remove what differs between two server processes: on a 2-core CPU, servers of
one and the same mode came out up to 3% apart in one run, for as long as they ran, and 0-10%
apart from one start to the next. ``--starts N`` starts
every server N times (fresh processes, the launch order rotated each time), runs ``--rounds``
rounds on each start and pools the ratios; the table also gives each start's own median ratio,
the spread a single start would have shown. A ``plain`` mode (SGLang without the plugin's
flags) beside ``ntp`` shows that spread for two baselines. Prints a table and writes
``ttft.json`` and ``ttft.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import client, modes, prompts, server  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local HF checkpoint with the <MTP> token, 'toy' or 'smollm2'")
    p.add_argument("--modes", default="ntp,conf_adapt:0.9:6,verify:6",
                   help="first mode is the baseline; 'plain@SPEC' adds a server of mode SPEC whose requests "
                   "are all {\"mtp\": false}")
    p.add_argument("--prompts", default=None, help="JSONL file, 'toy' or 'toy:N' (N worked examples before each "
                   "problem: longer prompts); default: the model's own set (toy, smollm2) or the built-in one")
    p.add_argument("--prompt-format", default="auto", choices=prompts.FORMATS)
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="times every prompt is sent to every mode, per start")
    p.add_argument("--starts", type=int, default=1, help="times every server is started (fresh processes, "
                   "rotated launch order); the ratios of all starts are pooled")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--server-args", default="", help="extra launch_server flags, one quoted string")
    p.add_argument("--start-timeout", type=float, default=900.0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cpu-smoke", action="store_true", help="--device cpu, one torch thread per server")
    return p


def resolve(args):
    if args.cpu_smoke:
        args.device = "cpu"
    source = str(prompts.DEFAULT_PROMPTS)
    if args.model == "toy":
        from sglang_mtp.toy import ensure_toy_model

        args.model, source = ensure_toy_model(), "toy"
    elif args.model == "smollm2":
        from sglang_mtp.recipe import adapted_model  # FileNotFoundError names the command that builds it

        args.model, source = adapted_model(), "smollm2"
    source = args.prompts or source
    prompt_list = prompts.load_prompts(source, args.num_prompts)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    fmt = prompts.resolve_format(args.prompt_format, source, bool(getattr(tokenizer, "chat_template", None)))
    args.texts = [prompts.format_prompt(p, fmt, tokenizer) for p in prompt_list]
    args.prompt_info = {"source": source, "format": fmt, "count": len(args.texts), "tokens_p50": statistics.median(
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in args.texts)}
    if min(args.num_prompts, args.rounds, args.max_new_tokens, args.starts) < 1:
        raise ValueError("--num-prompts, --rounds, --starts and --max-new-tokens must be >= 1")
    args.specs = list(dict.fromkeys(m.strip() for m in args.modes.split(",") if m.strip()))
    if args.specs and args.specs[0].startswith(PLAIN):
        raise ValueError("--modes: the first mode is the baseline; it cannot be a plain@ mode")
    # One server per mode, plain@SPEC included (its own server with SPEC's flags): a mode that
    # shared a server would often be measured right after that server's last request, warm,
    # while every other mode's server had just been woken from SIGSTOP.
    configs = modes.parse_modes(",".join(dict.fromkeys(_config(m) for m in args.specs)))
    by_spec = {m.spec: m for m in configs}
    args.mode_list = [by_spec[_config(m)] for m in args.specs]
    if args.out is None:
        args.out = ROOT / "bench" / "results" / time.strftime("ttft-%Y%m%d-%H%M%S")


PLAIN = "plain@"  # "plain@conf_adapt:0.9:6": a server of that mode, every request {"mtp": false}


def _config(spec: str) -> str:
    """The server mode of a ``--modes`` entry (``plain@X`` runs a server of mode X)."""
    return spec[len(PLAIN):] if spec.startswith(PLAIN) else spec


def one(url: str, payload: dict) -> client.RequestResult:
    results, _ = asyncio.run(client.run_load(url, [payload], 1))
    return results[0]


def only(servers, spec) -> None:
    """Let only ``spec``'s server run: idle SGLang schedulers poll, and on a small CPU the
    others' polling would be measured too (SIGSTOP / SIGCONT of their process groups)."""
    for name, srv in servers.items():
        os.killpg(srv.proc.pid, signal.SIGCONT if name == spec else signal.SIGSTOP)
    time.sleep(0.05)  # let the woken server settle back into its idle loop


def measure(servers, payloads, rounds: int) -> dict:
    """TTFT samples per mode: ``{spec: [[seconds per prompt] per round]}``. ``servers`` maps
    each mode to its own server; a ``plain@`` mode's requests are all ``{"mtp": false}``."""
    specs = list(servers)
    samples = {s: [[None] * len(payloads) for _ in range(rounds)] for s in specs}
    for r in range(rounds):
        for i, payload in enumerate(payloads):
            k = (r + i) % len(specs)
            for spec in specs[k:] + specs[:k]:
                only(servers, spec)
                servers[spec].post("/flush_cache?timeout=30")  # a real prefill, not a prefix-cache hit
                body = payload if not spec.startswith(PLAIN) else dict(
                    payload, sampling_params=dict(payload["sampling_params"], custom_params={"mtp": False}))
                res = one(servers[spec].url, body)
                if not res.ok or res.ttft is None:
                    raise RuntimeError(f"{spec}: request failed: {res.error}")
                samples[spec][r][i] = res.ttft
    return samples


def summarize(samples: dict, base: str) -> dict:
    out = {}
    for spec, rounds in samples.items():
        flat = [t for rnd in rounds for t in rnd]
        ratios = [t / b for rnd, brnd in zip(rounds, samples[base]) for t, b in zip(rnd, brnd)]
        out[spec] = {"ttft_p50_ms": 1e3 * statistics.median(flat), "ttft_p90_ms": 1e3 * _p90(flat),
                     "paired_ratio_p50": statistics.median(ratios), "n": len(flat)}
    return out


def _p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.9 * len(xs)))]


def table(summary: dict, base: str, per_start=None) -> str:
    """The markdown table; ``per_start``: one :func:`summarize` per start (a column of each
    start's own median ratio, when there was more than one)."""
    spread = per_start is not None and len(per_start) > 1
    lines = [f"| mode | TTFT p50 (ms) | TTFT p90 (ms) | paired ratio vs {base} (median) | requests |"
             + (" each start's ratio |" if spread else ""), "|---|---|---|---|---|" + ("---|" if spread else "")]
    for spec, s in summary.items():
        row = (f"| {spec} | {s['ttft_p50_ms']:.2f} | {s['ttft_p90_ms']:.2f} | "
               f"{s['paired_ratio_p50']:.3f}x | {s['n']} |")
        if spread:
            row += " " + ", ".join(f"{one[spec]['paired_ratio_p50']:.3f}" for one in per_start) + " |"
        lines.append(row)
    return "\n".join(lines)


def run_start(args, payloads, start: int) -> dict:
    """Start every mode's server (launch order rotated by ``start``), warm them up, measure
    ``args.rounds`` rounds, stop them: :func:`measure`'s samples."""
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")} if args.device == "cpu" else None
    pairs = list(zip(args.specs, args.mode_list))
    k = start % len(pairs)
    servers = {}
    try:
        for spec, mode in pairs[k:] + pairs[:k]:
            port = server.free_port()
            cmd = server.server_command(args.model, port, mode.server_flags(), args.device,
                                        shlex.split(args.server_args))
            log = spec.replace(":", "_").replace("@", "_") + (f".start{start}" if args.starts > 1 else "") + ".log"
            servers[spec] = server.Server(cmd, port, args.out / log, env=env)
            servers[spec].start()
        for srv in servers.values():
            srv.wait_healthy(args.start_timeout)
            os.killpg(srv.proc.pid, signal.SIGSTOP)  # its idle polling would slow the others' start-up
        servers = {spec: servers[spec] for spec in args.specs}  # the baseline first, as --modes lists them
        measure(servers, payloads[:2], 1)  # warm-up
        return measure(servers, payloads, args.rounds)
    finally:
        for srv in servers.values():
            if srv.proc is not None:  # None: its start() failed
                with contextlib.suppress(ProcessLookupError):  # a server that died is stopped all the same
                    os.killpg(srv.proc.pid, signal.SIGCONT)
            srv.stop()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    resolve(args)
    payloads = [client.generate_payload(t, args.max_new_tokens) for t in args.texts]
    args.out.mkdir(parents=True, exist_ok=True)
    starts = [run_start(args, payloads, j) for j in range(args.starts)]
    samples = {spec: [rnd for one in starts for rnd in one[spec]] for spec in args.specs}
    base = args.specs[0]
    summary = summarize(samples, base)
    per_start = [summarize(one, base) for one in starts]
    md = table(summary, base, per_start)
    cmd = "python bench/ttft.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    info = args.prompt_info
    about = (f"Prompts: {info['source']} ({info['count']}, format {info['format']}, "
             f"median {info['tokens_p50']:g} tokens before the server's special tokens)")
    (args.out / "ttft.md").write_text(f"`{cmd}`\n\n{about}\n\n{md}\n")
    (args.out / "ttft.json").write_text(json.dumps({"command": cmd, "prompts": info, "summary": summary,
                                                    "per_start": per_start, "samples": samples}, indent=1))
    print(about)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
