"""The self-distillation set: the model's own greedy chat answers to self-made prompts.

Answers come from the reference decoder (``ntp``, i.e. plain greedy decoding) on the
chat-templated prompt; they are stored as token ids (``data.jsonl``) so training sees
exactly what the model produced. An answer cut at ``max_new_tokens`` gets no EOS: the
model did not end it there.
"""

from __future__ import annotations

import json
import os
import sys
import time

from ..train.data import Example


def chat_ids(tokenizer, prompt: str) -> list:
    """Token ids of ``prompt`` as one user turn with the generation prompt."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                        add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    return list(ids)


def greedy_answers(model, tokenizer, prompts, max_new_tokens, batch_size=32, log=print):
    """One record per prompt: ``prompt``, ``prompt_ids``, ``answer_ids``, ``finished``."""
    from ..decode import generate

    stop = tokenizer.eos_token_id
    out, t0 = [], time.time()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        ids = [chat_ids(tokenizer, p) for p in chunk]
        for p, q, r in zip(chunk, ids, generate(model, ids, "ntp", max_new_tokens=max_new_tokens,
                                                stop_token_ids=[stop])):
            finished = bool(r.tokens) and r.tokens[-1] == stop
            answer = r.tokens[:-1] if finished else r.tokens
            out.append({"prompt": p, "prompt_ids": q, "answer_ids": answer, "finished": finished})
        if log:
            log(f"[distill] {len(out)}/{len(prompts)} answers ({time.time() - t0:.0f}s)")
    return out


def write_records(records, path):
    """Write records as JSONL, one per line."""
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def read_records(path) -> list:
    """The records written by :func:`write_records`."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def to_examples(records, eos_token_id) -> list:
    """Trainer examples: prompt + answer (+ EOS when the model ended the answer)."""
    return [Example(ids=r["prompt_ids"] + r["answer_ids"] + ([eos_token_id] if r["finished"] else []),
                    prompt_len=len(r["prompt_ids"]))
            for r in records if r["answer_ids"]]


def build_set(model_dir, prompts, out_path, max_new_tokens, log=None) -> dict:
    """Generate and save the set for ``prompts``; returns its summary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    records = greedy_answers(model, tokenizer, prompts, max_new_tokens, log=log)
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    write_records(records, out_path)
    n_tok = sum(len(r["answer_ids"]) for r in records)
    return {"answers": len(records), "answer_tokens": n_tok,
            "finished": sum(r["finished"] for r in records)}
