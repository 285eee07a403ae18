"""The toy model: a tiny Llama created from scratch, and its next-token pre-training.

The pre-trained model is the TEACHER of the MTP adaptation (and the NTP baseline of the
evaluation). Loss on response tokens only (the prompt is given at inference), AdamW,
warm-up then cosine decay; everything seeded.
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F


def tiny_llama(vocab_size, *, hidden=128, layers=4, heads=4, intermediate=384,
               max_positions=256, seed=0):
    """A randomly initialised ``LlamaForCausalLM`` (tied embeddings, ~0.6M parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads,
                      intermediate_size=intermediate, max_position_embeddings=max_positions,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _pad_batch(examples, pad_id):
    """input_ids, attention mask and response-only labels for a list of Examples: [B, T]."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for b, e in enumerate(examples):
        ids[b, :len(e.ids)] = torch.tensor(e.ids)
        labels[b, e.prompt_len:len(e.ids)] = ids[b, e.prompt_len:len(e.ids)]
    return ids, (ids != pad_id) | (labels != -100), labels


def cosine_lr(step, steps, lr, warmup, floor=0.1):
    """Linear warm-up, then cosine decay to ``floor * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def pretrain_ntp(model, examples, *, steps, lr=3e-3, batch_size=64, warmup=100, seed=0,
                 pad_id=0, log_every=100, log=print, callback=None):
    """Plain next-token training on the responses of ``examples``; returns loss history."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = random.Random(seed)
    history, t0 = [], time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup)
        ids, attn, labels = _pad_batch(rng.sample(examples, batch_size), pad_id)
        logits = model(input_ids=ids, attention_mask=attn).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(loss.item())
        if log and (step + 1) % log_every == 0:
            log(f"[toy/teacher] step {step + 1}/{steps} loss "
                f"{sum(history[-log_every:]) / log_every:.4f} ({time.time() - t0:.0f}s)")
        if callback is not None:
            callback(step + 1)
    model.eval()
    return history


@torch.no_grad()
def greedy_accuracy(model, tokenizer, problems, max_new_tokens=32, batch_size=100):
    """Held-out accuracy of plain greedy decoding (HF ``generate``; a quick probe)."""
    from .data import parse_answer

    model.eval()
    correct = 0
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # decoder-only batching
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        enc = tokenizer([p.prompt for p in chunk], return_tensors="pt", padding=True)
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
        correct += sum(parse_answer(t) == p.answer for t, p in zip(texts, chunk))
    tokenizer.padding_side = side
    return correct / max(1, len(problems))
