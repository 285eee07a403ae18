"""``sglang-mtp generate``: decode prompts with the reference decoder and show how it went.

    sglang-mtp generate --model M --prompt "..." --strategy conf_adapt --threshold 0.9 --k-max 8 \\
        --show-chunks --compare

``--show-chunks`` colours the continuation one colour per forward pass (the paper's Figure 1)
and prints a stats line; ``--compare`` also decodes with ``ntp`` and prints the speed-up.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from sglang_mtp.strategy import KINDS, MAX_K, Strategy

# Background colours, cycled per forward pass; black text stays readable on all of them.
COLOURS = ["\x1b[30;43m", "\x1b[30;46m", "\x1b[30;42m", "\x1b[30;45m", "\x1b[30;47m", "\x1b[30;44m"]
RESET = "\x1b[0m"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang-mtp generate", description=__doc__.split("\n")[0].strip("`: "))
    p.add_argument("--model", required=True, help="Hugging Face checkpoint directory (with a tokenizer)")
    p.add_argument("--prompt", action="append", required=True,
                   help="prompt text; repeat the flag to decode several prompts in one batch")
    p.add_argument("--strategy", choices=KINDS, default="conf_adapt", help="decoding strategy (default conf_adapt)")
    p.add_argument("--threshold", type=float, default=0.9, help="conf_adapt confidence threshold tau (default 0.9)")
    p.add_argument("--k-max", "--k", dest="k", type=int, default=8,
                   help="block size: static's k, conf_adapt's and verify's k_max (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="default 128")
    p.add_argument("--mask-token-id", type=int, default=None, help="default: config.mtp_mask_token_id")
    p.add_argument("--show-chunks", action="store_true", help="colour each forward pass's tokens; print stats")
    p.add_argument("--compare", action="store_true", help="also decode with ntp and print the speed-up")
    p.add_argument("--chat", action="store_true", help="wrap the prompt with the tokenizer's chat template")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at the model's EOS token")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (1 is fastest for tiny models on a busy machine)")
    return p


def make_strategy(args) -> Strategy:
    """The strategy the flags ask for, with errors that name the flag."""
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    if not 1 <= args.k <= MAX_K:
        raise ValueError(f"--k-max must be in [1, {MAX_K}], got {args.k}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.strategy == "ntp":
        return Strategy.ntp()
    if args.strategy == "static":
        return Strategy.static(args.k)
    if args.strategy == "verify":
        return Strategy.verify(args.k)
    return Strategy.conf_adapt(args.threshold, args.k)


def generate_main(argv=None) -> int:
    """``sglang-mtp generate`` (see the module docstring)."""
    args = build_parser().parse_args(argv)
    strategy = make_strategy(args)
    path = Path(args.model)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model path {args.model!r} is not a Hugging Face checkpoint (no config.json)")
    model, tokenizer = _load(path, args)
    if strategy.k > 1:  # fail before decoding when there is no mask token
        from sglang_mtp.convert import resolve_mask_token_id

        args.mask_token_id = resolve_mask_token_id(model, args.mask_token_id, tokenizer)
    prompts = [_encode(tokenizer, text, args.chat) for text in args.prompt]
    stops = () if args.ignore_eos else None
    results = _run(model, prompts, strategy, args, stops)
    for i, r in enumerate(results):
        prefix = f"[{i}] " if len(results) > 1 else ""
        text = _coloured(tokenizer, r) if args.show_chunks else _decode(tokenizer, r.tokens)
        print(prefix + text)
    if args.show_chunks or args.compare:
        print(stats_line(strategy, results))
    if args.compare:
        base = _run(model, prompts, Strategy.ntp(), args, stops)
        print(stats_line(Strategy.ntp(), base))
        print(compare_line(results, base))
    return 0


def _load(path, args):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from sglang_mtp.convert import load_tokenizer

    hf_logging.disable_progress_bar()  # keep stderr for our own one-line messages
    tokenizer = load_tokenizer(path)
    if tokenizer is None:
        raise ValueError(f"checkpoint {str(path)!r} has no tokenizer; generate needs one to encode --prompt")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tokenizer


def _encode(tokenizer, text, chat):
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("--chat: the tokenizer has no chat template")
        return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=False))
    return tokenizer(text)["input_ids"]


def _run(model, prompts, strategy, args, stops):
    """Warm up once (first-call overheads would distort tokens/s), then decode."""
    from sglang_mtp.decode import generate

    generate(model, prompts[:1], "ntp", max_new_tokens=1, stop_token_ids=(), mask_token_id=args.mask_token_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = generate(model, prompts, strategy, args.max_new_tokens, stops, args.mask_token_id)
    for w in caught:  # one clear line instead of Python's two-line warning format
        print(f"sglang-mtp generate: warning: {w.message}", file=sys.stderr)
    return results


def _decode(tokenizer, tokens):
    return tokenizer.decode(tokens, skip_special_tokens=True)


def _coloured(tokenizer, result) -> str:
    # Decode growing prefixes and colour the new text, so multi-token characters stay whole.
    out, shown, n = [], "", 0
    for i, size in enumerate(result.chunks):
        n += size
        text = _decode(tokenizer, result.tokens[:n])
        piece, shown = text[len(shown):], text
        colour = COLOURS[i % len(COLOURS)]
        out.append(colour + piece.replace("\n", RESET + "\n" + colour) + RESET)
    return "".join(out)


def stats_line(strategy, results) -> str:
    """``[conf_adapt tau=0.9 k_max=8] 57 tokens, 21 passes, effective k 2.71, 143.2 tokens/s``."""
    tokens = sum(len(r.tokens) for r in results)
    passes = sum(r.passes for r in results)
    wall = max(r.wall_time for r in results)
    return (f"[{describe(strategy)}] {tokens} tokens, {passes} passes, effective k "
            f"{tokens / max(passes, 1):.2f}, {tokens / wall if wall > 0 else 0.0:.1f} tokens/s, {wall:.3f} s")


def compare_line(results, base) -> str:
    """Speed-up over ntp (tokens/s and forward passes) and whether the text is identical."""
    def rate(rs):
        wall = max(r.wall_time for r in rs)
        return sum(len(r.tokens) for r in rs) / wall if wall > 0 else 0.0

    speed = rate(results) / rate(base) if rate(base) > 0 else float("nan")
    fewer = sum(r.passes for r in base) / max(sum(r.passes for r in results), 1)
    same = sum(r.tokens == b.tokens for r, b in zip(results, base))
    return (f"speed-up over ntp: {speed:.2f}x tokens/s, {fewer:.2f}x fewer forward passes; "
            f"output identical to ntp for {same}/{len(base)} prompt(s)")


def describe(strategy) -> str:
    if strategy.kind == "conf_adapt":
        return f"conf_adapt tau={strategy.threshold:g} k_max={strategy.k}"
    if strategy.kind in ("static", "verify"):
        return f"{strategy.kind} k={strategy.k}" if strategy.kind == "static" else f"verify k_max={strategy.k}"
    return "ntp"
