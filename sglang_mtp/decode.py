"""The reference MTP decoder: the executable definition of MTP decoding over any HF causal LM.

    from sglang_mtp.decode import generate
    results = generate(model, [[1, 5, 9], [1, 7]], strategy=["conf_adapt:0.9:8", "verify:4"],
                       max_new_tokens=64)
    results[0].tokens, results[0].passes, results[0].chunks, results[0].effective_k

All prompts advance together: one forward pass per step for the whole batch, each request
with its own strategy and accept length. A pass feeds each request's pending tokens, its k-1
masks and padding masks up to a common width W, with explicit position ids and a 4-D mask
over a KV cache with holes (``kv.py``); the accept rule is ``step.accept`` (the same function
the SGLang worker calls), so both paths emit the same tokens by construction.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import torch

from sglang_mtp.convert import is_mtp_trained, resolve_mask_token_id
from sglang_mtp.kv import HoleyKVCache
from sglang_mtp.sampling import RowSampling, Sampling, check_seed, random_seed
from sglang_mtp.step import accept, propose, step_positions, strategy_tensors
from sglang_mtp.strategy import Strategy


class UntrainedMTPWarning(UserWarning):
    """A lossy MTP strategy runs on a checkpoint whose mask token was never trained."""


@dataclass
class GenerationResult:
    """One request's output. ``chunks[i]`` = tokens emitted by the i-th forward pass."""

    tokens: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    wall_time: float = 0.0  # seconds from the start of generate() until this request ended
    strategy: Strategy = field(default_factory=Strategy.ntp)
    prompt_len: int = 0
    finish_reason: str = "length"  # "stop" (a stop token was emitted) or "length"

    @property
    def passes(self) -> int:
        """Forward passes this request took part in."""
        return len(self.chunks)

    @property
    def effective_k(self) -> float:
        """Tokens emitted per forward pass (the paper's acceleration factor)."""
        return len(self.tokens) / self.passes if self.passes else 0.0

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.wall_time if self.wall_time > 0 else 0.0


def generate(model, prompts, strategy="ntp", max_new_tokens: int = 64, stop_token_ids=None,
             mask_token_id=None, sampling=None, seed=None, width_policy=None) -> list:
    """MTP decoding of a batch of prompts; returns one :class:`GenerationResult` each.

    Args:
        model: a Hugging Face causal LM (full attention), in eval mode, on any device.
        prompts: list of token-id lists (lengths may differ).
        strategy: a :class:`Strategy` or spec (``"ntp"``, ``"static:3"``, ``"conf_adapt:0.9:8"``,
            ``"verify:4"``, a dict), or a list with one per prompt.
        max_new_tokens: per-request cap, further capped by ``config.max_position_embeddings``.
        stop_token_ids: ids that end a request (emitted, inclusive); None = the model's EOS
            ids (``generation_config.eos_token_id``); ``()`` = none.
        mask_token_id: the ``<MTP>`` id; None = ``config.mtp_mask_token_id``. Only needed
            when some strategy has k > 1. It is never emitted.
        sampling: None (greedy), a :class:`~sglang_mtp.sampling.Sampling`, a temperature or a
            dict (``temperature``, ``top_k``, ``top_p``, ``min_p``), or a list with one per
            prompt. Semantics per strategy: :mod:`sglang_mtp.sampling`.
        seed: the sampling seed (int), or a list with one per prompt; None = a fresh random
            seed per request. The same seed gives the same tokens alone or in any batch.
        width_policy: a :class:`~sglang_mtp.width.WidthPolicy` (load-adaptive width): every
            pass caps each block at ``width_policy.cap(live requests)``, as the SGLang worker
            does (the first pass too: at cap 1 it emits t1 alone, like a prefill without
            masks). None = no cap. Lossy output depends on it.
    Lossy strategies (static/conf_adapt with k > 1) on a checkpoint not marked
    ``mtp_trained`` emit an :class:`UntrainedMTPWarning`.
    """
    prompts = _check_prompts(model, prompts)
    strategies = _per_prompt(strategy, len(prompts))
    samplings, seeds = _sampling_per_prompt(sampling, seed, len(prompts))
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    mask_id = mask_token_id
    if mask_id is not None or any(s.k > 1 for s in strategies) or getattr(model.config, "mtp_mask_token_id", None) is not None:
        mask_id = resolve_mask_token_id(model, explicit=mask_token_id)
    warn_if_untrained(model, strategies)
    ctx = getattr(model.config, "max_position_embeddings", None)
    budgets = [max_new_tokens if ctx is None else min(max_new_tokens, ctx - len(p)) for p in prompts]
    results = [GenerationResult(strategy=s, prompt_len=len(p)) for s, p in zip(strategies, prompts)]
    with torch.inference_mode():
        _decode(model, prompts, strategies, budgets, _stop_ids(model, stop_token_ids), mask_id, ctx, results,
                samplings, seeds, width_policy)
    return results


def warn_if_untrained(model_or_config, strategies) -> None:
    """Warn when a lossy strategy would run on a checkpoint whose mask token is untrained."""
    lossy = sorted({s.kind for s in strategies if s.kind in ("static", "conf_adapt") and s.k > 1})
    if lossy and not is_mtp_trained(model_or_config):
        config = getattr(model_or_config, "config", model_or_config)
        name = getattr(config, "_name_or_path", "") or "this model"
        import warnings

        warnings.warn(
            f"{name} is not MTP-trained (config.mtp_trained is not true): an untrained <MTP> token predicts "
            f"confident garbage, so {'/'.join(lossy)} decoding will emit wrong tokens. Train it "
            "(sglang-mtp train) or use the lossless 'verify' / plain 'ntp' strategies.",
            UntrainedMTPWarning, stacklevel=3,
        )


def _check_prompts(model, prompts):
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, (list, tuple)) for p in prompts):
        raise ValueError("prompts must be a list of token-id lists")
    vocab = model.config.get_text_config().vocab_size
    ctx = getattr(model.config, "max_position_embeddings", None)
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        if not all(isinstance(t, int) and 0 <= t < vocab for t in p):
            raise ValueError(f"prompt {i} has token ids outside [0, {vocab})")
        if ctx is not None and len(p) >= ctx:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens but the model's context is {ctx} positions: no room to generate"
            )
    return [list(p) for p in prompts]


def _per_prompt(strategy, n):
    if isinstance(strategy, (list, tuple)):
        if len(strategy) != n:
            raise ValueError(f"strategy list has {len(strategy)} entries for {n} prompts")
        return [Strategy.parse(s) for s in strategy]
    return [Strategy.parse(strategy)] * n


def _sampling_per_prompt(sampling, seed, n):
    many = isinstance(sampling, (list, tuple))
    if many and len(sampling) != n:
        raise ValueError(f"sampling list has {len(sampling)} entries for {n} prompts")
    samplings = [Sampling.parse(s) for s in sampling] if many else [Sampling.parse(sampling)] * n
    if isinstance(seed, (list, tuple)):
        if len(seed) != n:
            raise ValueError(f"seed list has {len(seed)} entries for {n} prompts")
        seeds = [check_seed(s) for s in seed]
    else:
        seeds = [check_seed(seed) if seed is not None else random_seed() for _ in range(n)]
    return samplings, seeds


def _stop_ids(model, stop_token_ids):
    if stop_token_ids is None:
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        stop_token_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    return torch.tensor(list(stop_token_ids), dtype=torch.int64, device=model.device)


class _LiveRequests:
    """Per-request decoder state of the requests still running (row r = request ids[r])."""

    def __init__(self, ids, prompts, strategies, budgets, dev, samplings, seeds):
        self.ids = ids
        self.pending = _pad([prompts[b] for b in ids], dev)  # [B, P]: the first pass feeds the prompts
        self.pending_len = torch.tensor([len(prompts[b]) for b in ids], device=dev)  # [B]
        self.draft_len = torch.zeros_like(self.pending_len)  # [B]
        self.k, self.thr, self.ver = strategy_tensors([strategies[b] for b in ids], dev)
        self.budget = torch.tensor([budgets[b] for b in ids], device=dev)  # [B] tokens left
        picked = [samplings[b] for b in ids]
        self.sampling = RowSampling.build(picked, [seeds[b] for b in ids], dev) if any(
            not s.greedy for s in picked) else None

    def advance(self, out) -> None:
        self.pending, self.pending_len = out.next_pending, out.next_pending_len.long()
        self.draft_len, self.budget = out.next_draft_len.long(), self.budget - out.emit_len

    def keep_rows(self, rows) -> None:
        self.ids = [self.ids[i] for i in rows.tolist()]
        for name in ("pending", "pending_len", "draft_len", "k", "thr", "ver", "budget"):
            setattr(self, name, getattr(self, name)[rows])
        if self.sampling is not None:
            self.sampling = self.sampling.select(rows)


def _decode(model, prompts, strategies, budgets, stops, mask_id, ctx, results, samplings, seeds, width_policy):
    """The step loop: one forward pass for all live requests, then ``step.accept``."""
    dev, start = model.device, time.perf_counter()
    ids = [b for b in range(len(prompts)) if budgets[b] > 0]
    if not ids:
        return
    live = _LiveRequests(ids, prompts, strategies, budgets, dev, samplings, seeds)
    kv = HoleyKVCache(model, len(live.ids), dev)
    cache_arg = cache_keyword(model)
    max_k = max(s.k for s in strategies)
    suppress = -1 if mask_id is None else mask_id
    while live.ids:
        seq_lens = kv.seq_lens
        k = live.k.long()
        if width_policy is not None:  # the load's block cap (sglang_mtp.width.step_cap)
            k = k.clamp(max=width_policy.cap(len(live.ids)))
        # Near the context limit, fewer masks: no block row may predict a position >= ctx
        # (such tokens could never be emitted, and verify's drafts must stay in context).
        k = k if ctx is None else torch.minimum(k, ctx - seq_lens - live.pending_len).clamp(min=1)
        width = int((live.pending_len + k - 1).max())
        logits = model(
            input_ids=propose(live.pending, live.pending_len, width, max(suppress, 0)),
            position_ids=step_positions(seq_lens, width),
            attention_mask=kv.attention_mask(width, model.dtype),
            use_cache=True, **{cache_arg: kv.cache},
        ).logits  # [B, W, V]
        out = accept(logits.reshape(-1, logits.shape[-1]), live.pending, live.pending_len, live.draft_len, k,
                     live.thr, live.ver, suppress, max_k, stop_token_ids=stops, budget=live.budget,
                     sampling=live.sampling, seq_lens=seq_lens)
        kv.commit(width, out.keep)
        _record(results, live.ids, out, stops, time.perf_counter() - start)
        live.advance(out)
        if bool(out.finished.any()):
            rows = (~out.finished).nonzero().squeeze(1)
            live.keep_rows(rows)
            kv.select(rows)
        kv.compact()


def cache_keyword(model) -> str:
    """The name ``model.forward`` takes its KV cache by: transformers 5.24 renamed
    ``past_key_values`` to ``cache`` (the old name warns there and is to go in 5.40); older
    releases, and forwards that only take ``**kwargs``, use ``past_key_values``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


def _record(results, live, out, stops, now):
    stop_set = set(stops.tolist())
    for row, (b, n, done) in enumerate(zip(live, out.emit_len.tolist(), out.finished.tolist())):
        r = results[b]
        r.tokens.extend(out.emitted[row, :n].tolist())
        r.chunks.append(n)
        if done:
            r.wall_time = now
            r.finish_reason = "stop" if r.tokens and r.tokens[-1] in stop_set else "length"


def _pad(seqs, device):
    out = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out.to(device)
