"""The ``sglang-mtp`` command line: a thin dispatcher over subcommand functions.

Adding a subcommand = one line in :data:`COMMANDS`: ``name -> ("module:function", help)``,
where ``function(argv: list[str]) -> int`` parses its own arguments (``prog`` should be
``"sglang-mtp NAME"``) and returns the exit status. Modules are imported only when their
command runs, so ``sglang-mtp --help`` stays fast. Every command gets the same error
handling: a ``ValueError`` / ``FileNotFoundError`` (bad input, missing model, no mask token)
prints one line ``sglang-mtp NAME: error: ...`` and exits with status 2, no traceback
(set ``SGLANG_MTP_DEBUG=1`` to see it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "convert": ("sglang_mtp.convert:convert_main", "add the <MTP> mask token to a Hugging Face checkpoint"),
    "generate": ("sglang_mtp.cli_generate:generate_main",
                 "decode prompts with ntp / static / conf_adapt / verify (reference decoder)"),
    "train": ("sglang_mtp.train:train_main", "MTP self-distillation of a converted checkpoint"),
    "toy": ("sglang_mtp.toy:toy_main", "the CPU toy: train a tiny teacher, MTP-adapt it, evaluate (cached)"),
    "smollm2": ("sglang_mtp.recipe:recipe_main",
                "MTP-adapt SmolLM2-135M-Instruct on its own answers, evaluate (cached)"),
    "demo": ("sglang_mtp.demo:demo_main", "decode the toy MTP model: reference decoder vs ntp, then a CPU SGLang Engine"),
}


def _top_parser() -> argparse.ArgumentParser:
    from sglang_mtp import __version__

    parser = argparse.ArgumentParser(
        prog="sglang-mtp", description="Multi-token prediction (MTP) decoding for Hugging Face models and SGLang.",
        epilog="Run 'sglang-mtp COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"sglang-mtp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None) -> int:
    """Entry point of ``sglang-mtp`` (console script ``sglang-mtp = sglang_mtp.cli:main``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, rest = _top_parser().parse_known_args(argv[:1])
    except SystemExit as e:  # --help, --version, unknown command
        return int(e.code or 0)
    return run_command(args.command, argv[1:] + rest)


def run_command(name: str, argv) -> int:
    """Run subcommand ``name`` with ``argv``, turning input errors into one-line messages."""
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(list(argv)) or 0)
    except SystemExit as e:  # argparse errors and --help inside the subcommand
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except (ValueError, FileNotFoundError, ImportError) as e:
        if os.environ.get("SGLANG_MTP_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"sglang-mtp {name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
