"""Benchmark prompts: loading and validating a JSONL prompt set, formatting, answer checking.

A prompt file has one JSON object per line with a non-empty string ``prompt`` and an optional
``answer`` (the final number, as a string or a number). Blank lines are skipped. The built-in
set is ``bench/prompts/math.jsonl`` (64 short word problems written for this project).
``toy`` instead of a path gives held-out problems of the toy task (``sglang_mtp.toy.data``),
already in the toy model's ``Q: ...\\nA:`` format, and ``toy:N`` the same problems each after
N worked held-out examples (longer prompts: about 50 tokens per example); ``smollm2`` gives the
held-out chat prompts of the real-model recipe (``sglang_mtp.recipe.prompts``: topics never
trained on, no answers).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import List, Optional

DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "prompts" / "math.jsonl"
FORMATS = ("auto", "raw", "qa", "chat")
INSTRUCTION = "Solve the problem step by step, then end with 'The answer is N.' where N is a number."
QA_TEMPLATE = "Question: {prompt}\n" + INSTRUCTION + "\nAnswer:"
_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_FINAL_PATTERNS = (
    re.compile(r"answer is[:\s]*\**\s*(" + _NUMBER + ")", re.IGNORECASE),
    re.compile(r"####\s*(" + _NUMBER + ")"),
    re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}"),
)


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt; ``answer`` is the expected final number (None: no accuracy)."""

    text: str
    answer: Optional[str] = None


def load_prompts(path, limit: Optional[int] = None) -> List[Prompt]:
    """Read and validate a JSONL prompt file (``"toy"``: the toy task's held-out problems).

    Raises ValueError naming the file and line for malformed records, and when the file has
    no prompts at all.
    """
    shots = toy_shots(path)
    if shots is not None:
        return toy_prompts(limit or 64, shots=shots)
    if str(path) == "smollm2":
        return recipe_prompts(limit or 40)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--prompts: no such file {str(path)!r}")
    prompts = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            prompts.append(_parse_record(line, f"{path}:{lineno}"))
    if not prompts:
        raise ValueError(f"--prompts: {str(path)!r} holds no prompts")
    return prompts[:limit] if limit else prompts


def _parse_record(line: str, where: str) -> Prompt:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'prompt' field")
    text = rec.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: 'prompt' must be a non-empty string")
    answer = rec.get("answer")
    if answer is None:
        return Prompt(text)
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ValueError(f"{where}: 'answer' must be a number or a string, got {answer!r}")
    if parse_number(str(answer)) is None:
        raise ValueError(f"{where}: 'answer' {answer!r} is not a number")
    return Prompt(text, str(answer))


def toy_prompts(n: int, seed: int = 0, shots: int = 0) -> List[Prompt]:
    """The first ``n`` held-out problems of the toy task (never in its training set), each
    after ``shots`` other held-out problems worked in the toy's answer format (the next ones
    in the split, so every prompt has different examples)."""
    from sglang_mtp.toy.data import make_splits

    _, held_out = make_splits(0, n + shots, seed=seed)
    out = []
    for i, p in enumerate(held_out[:n]):
        examples = "".join(q.prompt + q.response + "\n" for q in held_out[i + 1:i + 1 + shots])
        out.append(Prompt(examples + p.prompt, str(p.answer)))
    return out


def toy_shots(spec) -> Optional[int]:
    """The worked examples per prompt of a toy prompt set (``toy``: 0, ``toy:N``: N), or None
    for any other prompt source."""
    spec = str(spec)
    if spec == "toy":
        return 0
    if not spec.startswith("toy:"):
        return None
    value = spec[len("toy:"):]
    if not value.isdigit():
        raise ValueError(f"--prompts {spec!r}: 'toy:N' takes a number of worked examples N >= 0")
    return int(value)


def recipe_prompts(n: int, seed: int = 0) -> List[Prompt]:
    """The first ``n`` held-out chat prompts of ``sglang-mtp smollm2`` (never trained on)."""
    from sglang_mtp.recipe.pipeline import RecipeConfig
    from sglang_mtp.recipe.prompts import make_prompts

    _, held_out = make_prompts(RecipeConfig().n_train, max(n, RecipeConfig().n_eval), seed)
    return [Prompt(p) for p in held_out[:n]]


def prompts_sha256(prompts: List[Prompt]) -> str:
    """A hash of the prompt set as used (texts and answers, in order)."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.text, p.answer]).encode())
    return h.hexdigest()


def resolve_format(fmt: str, prompts_arg, has_chat_template: bool) -> str:
    """``auto``: raw for the toy set, chat when the tokenizer has a template, else qa."""
    if fmt not in FORMATS:
        raise ValueError(f"--prompt-format must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    if toy_shots(prompts_arg) is not None:
        return "raw"
    return "chat" if has_chat_template else "qa"


def format_prompt(prompt: Prompt, fmt: str, tokenizer=None) -> str:
    """The text sent to the server for ``prompt`` in format raw, qa or chat."""
    if fmt == "raw":
        return prompt.text
    if fmt == "qa":
        return QA_TEMPLATE.format(prompt=prompt.text)
    if fmt == "chat":
        if tokenizer is None:
            raise ValueError("--prompt-format chat needs the model's tokenizer")
        # the answer-format instruction only where an answer is graded
        content = prompt.text if prompt.answer is None else prompt.text + "\n" + INSTRUCTION
        messages = [{"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"--prompt-format must be one of {FORMATS[1:]}, got {fmt!r}")


def parse_number(text: str) -> Optional[Fraction]:
    """A number written like ``1,350`` / ``$21`` / ``-3.5`` / ``12.`` as an exact Fraction."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(output: str) -> Optional[Fraction]:
    """The final number of a model output: the first "The answer is N" (also ``#### N``,
    ``\\boxed{N}``); without such a marker, the last number in the text."""
    for pattern in _FINAL_PATTERNS:
        m = pattern.search(output)
        if m:
            return parse_number(m.group(1))
    numbers = re.findall(_NUMBER, output)
    return parse_number(numbers[-1]) if numbers else None


def is_correct(output: str, answer: Optional[str]) -> Optional[bool]:
    """Exact match of the final number (None when the prompt has no answer)."""
    if answer is None:
        return None
    got = extract_answer(output)
    return got is not None and got == parse_number(answer)
