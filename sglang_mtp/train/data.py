"""Training data for the MTP trainer: JSONL prompt/response records or plain text.

An :class:`Example` is a token list plus the length of its prompt (context only: MTP regions
predict response tokens). Files:
- ``.jsonl``: one JSON object per line with a prompt field and a response field (names
  configurable; defaults ``prompt``/``response``), or a single ``text`` field;
- anything else: plain text, one example per non-empty line (no prompt).
The response gets the tokenizer's EOS appended. ``chat_template=True`` wraps the prompt as
a user turn with the tokenizer's chat template (generation prompt added).
"""

from __future__ import annotations

import functools
import json
import os
import random
from dataclasses import dataclass


@dataclass
class Example:
    """One training sequence: ``ids`` (prompt + response + EOS) and its prompt length."""

    ids: list
    prompt_len: int = 0


def read_records(path, prompt_field="prompt", response_field="response", text_field="text"):
    """Yield (prompt, response) string pairs from a JSONL or text file."""
    if not os.path.isfile(path):
        raise ValueError(f"data file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        if not path.endswith((".jsonl", ".json")):
            for line in f:
                if line.strip():
                    yield "", line.rstrip("\n")
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
            if response_field in rec:
                yield str(rec.get(prompt_field, "")), str(rec[response_field])
            elif text_field in rec:
                yield "", str(rec[text_field])
            else:
                raise ValueError(f"{path}:{n}: record has neither {response_field!r} "
                                 f"nor {text_field!r}")


def encode_example(tokenizer, prompt, response, *, chat_template=False, max_len=None) -> Example:
    """Tokenize one prompt/response pair (EOS appended to the response)."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        prompt_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
            prompt_ids = prompt_ids["input_ids"]
        prompt_ids = list(prompt_ids)
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token_id; the EOS rule needs one")
    ids = list(prompt_ids) + list(response_ids) + [tokenizer.eos_token_id]
    if max_len is not None:
        ids = ids[:max_len]
    return Example(ids=ids, prompt_len=min(len(prompt_ids), len(ids)))


def load_examples(path, tokenizer, *, chat_template=False, max_len=None,
                  prompt_field="prompt", response_field="response") -> list:
    """Read and tokenize a data file into a list of :class:`Example`."""
    examples = [encode_example(tokenizer, p, r, chat_template=chat_template, max_len=max_len)
                for p, r in read_records(path, prompt_field, response_field)]
    examples = [e for e in examples if len(e.ids) - e.prompt_len >= 1]
    if not examples:
        raise ValueError(f"data file {path!r} produced no usable examples")
    return examples


@functools.lru_cache(maxsize=4)
def example_order(n_examples, epoch, seed) -> tuple:
    """The shuffled order of one epoch (seeded, so a resumed run sees the same batches)."""
    order = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def batch_indices(n_examples, start, size, seed) -> list:
    """Example indices of the ``size`` examples starting at global sample ``start``."""
    out = []
    for pos in range(start, start + size):
        epoch, idx = divmod(pos, n_examples)
        out.append(example_order(n_examples, epoch, seed)[idx])
    return out
