"""``sglang-mtp demo``: the project's main job on its embedded default model.

Builds the toy MTP model when it is absent (``sglang_mtp.toy``; cached afterwards), then
decodes held-out toy problems twice with the reference decoder, plain next-token decoding and
ConfAdapt, shows the ConfAdapt chunks in colour (one colour per forward pass), and prints the
speed-up and both accuracies. With SGLang installed it then serves the same prompts through
a real ``sglang.Engine`` on the CPU with ``--decode-mode mtp`` and checks that the engine
emits exactly the reference decoder's tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import warnings

import torch

from .strategy import Strategy


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang-mtp demo", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="an MTP checkpoint (default: the toy model, built if absent)")
    p.add_argument("--threshold", type=float, default=0.9, help="ConfAdapt tau (default 0.9)")
    p.add_argument("--k-max", type=int, default=None, help="ConfAdapt k_max (default: the toy's training k_max)")
    p.add_argument("--num-prompts", type=int, default=32, help="held-out toy problems to decode (default 32)")
    p.add_argument("--show", type=int, default=3, help="how many outputs to print in colour (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--no-engine", action="store_true", help="skip the SGLang Engine part")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timing runs per mode; the median is shown (default 3)")
    return p


def demo_main(argv=None) -> int:
    """Entry point of ``sglang-mtp demo``; returns the exit status."""
    args = build_parser().parse_args(argv)
    for name in ("num_prompts", "threads", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    from . import toy

    cfg = toy.ToyConfig()
    path = args.model or toy.ensure_toy_model(log=lambda m: print(m, file=sys.stderr, flush=True))
    k_max = args.k_max or cfg.mtp.k_max
    strategy = Strategy.conf_adapt(args.threshold, k_max)
    problems = toy.make_splits(cfg.n_train, cfg.n_eval, cfg.seed)[1][: args.num_prompts]
    ref, prompt_ids = _reference(path, problems, strategy, args)
    if args.no_engine:
        return 0
    try:
        import sglang  # noqa: F401
    except ImportError:
        print("\nSGLang is not installed: skipping the Engine part (make install brings it).")
        return 0
    return _engine_check(path, prompt_ids, strategy, ref, args)


def _reference(path, problems, strategy, args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .cli_generate import _coloured, compare_line, stats_line
    from .decode import generate
    from .toy import parse_answer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = [tok(p.prompt)["input_ids"] for p in problems]
    generate(model, prompts[:1], "ntp", max_new_tokens=2)  # warm-up
    runs = {"ntp": [], "mtp": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(args.repeats):  # alternate the modes so drift hits both alike
            runs["ntp"].append(generate(model, prompts, Strategy.ntp(), args.max_new_tokens))
            runs["mtp"].append(generate(model, prompts, strategy, args.max_new_tokens,
                                        width_policy=server_policy(strategy)))
    base, mtp = _median_run(runs["ntp"]), _median_run(runs["mtp"])
    print(f"model: {path}\nreference decoder, {len(prompts)} held-out problems in one batch, "
          f"{args.threads} thread(s), timings: the median of {args.repeats} alternating runs\n")
    for p, r in list(zip(problems, mtp))[: args.show]:
        print(p.prompt + _coloured(tok, r) + "\n")
    for name, rs in (("ntp", base), ("mtp", mtp)):
        right = sum(parse_answer(tok.decode(r.tokens, skip_special_tokens=True)) == p.answer
                    for p, r in zip(problems, rs))
        print(f"{stats_line(Strategy.ntp() if name == 'ntp' else strategy, rs)}; accuracy {right}/{len(rs)}")
    print(compare_line(mtp, base))
    return [r.tokens for r in mtp], prompts


def _median_run(runs):
    """The run (a list of per-prompt results) with the median wall time."""
    return sorted(runs, key=lambda rs: max(r.wall_time for r in rs))[len(runs) // 2]


def _engine_check(path, prompt_ids, strategy, ref_tokens, args) -> int:
    # A failing Engine kills its parent process: run it in a child and read its JSON.
    job = dict(path=path, prompts=prompt_ids, threshold=strategy.threshold, k_max=strategy.k,
               max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    print("\nstarting an SGLang Engine on the CPU with --decode-mode mtp (30-60 s) ...", flush=True)
    # One torch thread per process: on a shared 2-core CPU, 2 OpenMP threads stall at every
    # barrier whenever the other core is busy, and timings swing 10-70x (see the README).
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run([sys.executable, "-m", "sglang_mtp.demo", "--engine-child", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    line = next((l for l in reversed(proc.stdout.splitlines()) if l.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        print(proc.stderr[-3000:], file=sys.stderr)
        print(f"sglang-mtp demo: the SGLang Engine failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    out = json.loads(line)
    same = sum(a == b for a, b in zip(out["tokens"], ref_tokens))
    n_tok = sum(len(t) for t in out["tokens"])
    passes = out["passes"]
    k_eff = f"{n_tok / passes:.2f}" if passes else "n/a"
    mtp_s, ntp_s = statistics.median(out["mtp_seconds"]), statistics.median(out["ntp_seconds"])
    print(f"SGLang Engine (CPU, {args.threads} thread(s), {describe_engine(strategy)}): {n_tok} tokens, "
          f"effective k {k_eff}, {mtp_s:.2f} s vs {ntp_s:.2f} s with {{\"mtp\": false}} "
          f"({ntp_s / mtp_s:.2f}x; median of {len(out['mtp_seconds'])} alternating runs each; "
          "CPU timings of a tiny model are dominated by per-step overheads)")
    print(f"engine output identical to the reference decoder for {same}/{len(ref_tokens)} prompts "
          f"(both with the server's default width policy: {server_policy(strategy).describe()})")
    return 0 if same == len(ref_tokens) else 1


def describe_engine(strategy) -> str:
    return f"--decode-mode mtp --mtp-threshold {strategy.threshold:g} --mtp-k-max {strategy.k}"


def server_policy(strategy):
    """The CPU server's default load-adaptive width policy for ``strategy``'s k_max: the
    reference decoder takes it so that both cap every pass's blocks alike."""
    from .sglang_plugin.flags import MTPConfig

    return MTPConfig(k_max=strategy.k).width_policy("cpu")


def _engine_child(job: dict) -> None:
    import time

    from .sglang_plugin.flags import engine

    llm = engine(job["path"], strategy="conf_adapt", threshold=job["threshold"], k_max=job["k_max"],
                 device="cpu", attention_backend="torch_native", disable_cuda_graph=True, dtype="float32",
                 mem_fraction_static=0.3, max_total_tokens=8192, log_level="error")
    try:
        greedy = {"temperature": 0, "max_new_tokens": job["max_new_tokens"]}
        llm.generate(input_ids=job["prompts"][:1], sampling_params=greedy)  # warm-up
        timings, outs = {"ntp": [], "mtp": []}, {}
        for _ in range(job["repeats"]):  # alternate the modes so drift hits both alike
            for name, extra in (("ntp", {"custom_params": {"mtp": False}}), ("mtp", {})):
                t0 = time.perf_counter()
                outs[name] = llm.generate(input_ids=job["prompts"], sampling_params={**greedy, **extra})
                timings[name].append(time.perf_counter() - t0)
        mtp = outs["mtp"]
        passes = [o["meta_info"].get("mtp_forward_passes") for o in mtp]
        print(json.dumps(dict(
            tokens=[o["output_ids"] for o in mtp],
            passes=sum(passes) if all(p is not None for p in passes) else None,
            mtp_seconds=timings["mtp"], ntp_seconds=timings["ntp"])), flush=True)
    finally:
        llm.shutdown()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--engine-child":
        _engine_child(json.loads(sys.argv[2]))
    else:
        sys.exit(demo_main(sys.argv[1:]))
