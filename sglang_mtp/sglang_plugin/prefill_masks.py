"""Masks ride the prefill: a request's first block comes out of its prefill forward.

Without this, a request's prefill emits one token and its first decode step re-runs the last
prompt row with k-1 masks to get the reference decoder's first block: one extra forward per
request. Here the prefill (EXTEND) forward itself carries each MTP request's k-1 ``<MTP>``
tokens after its prompt, so its last prompt row plus the mask rows are the reference
decoder's first pass. The prefill emits t1 (SGLang appends one token per prefill); the rest
of the accepted block (lossy) rides the request's first decode step, whose pending tokens are
the whole block (verify: t1 and k-1 fresh drafts), exactly the reference decoder's state
after its first pass.

KV of the masks: k-1 slots per request are allocated for the forward only, written to the
request's ``req_to_token`` row right after its prompt, and freed as soon as the forward is
queued. Nothing keeps them: SGLang's committed length (and so the radix cache) ends at the
prompt, and the first decode step reserves and overwrites those positions with real tokens.
Stream order makes the early free safe: a later forward that reuses a slot runs after this one.

Requests keep the old first-step path (``state.first``) whenever this does not apply: a
batch asking for logprobs (mask rows would enter the input logprobs), multimodal or embedding
inputs, mixed decode requests, paged KV (page size > 1), no host copy of the sequence
lengths, a middle prefill chunk, or no free slots. The logits of the block rows are computed by the model's own logits processor from the
forward's hidden states (:func:`capture_block_logits`).
"""

from __future__ import annotations

import contextlib
from typing import List, Optional

import torch

from .patching import overriding


def mask_counts(batch, blocks: List[int], allocator, page_size: int, columns: int) -> Optional[List[int]]:
    """Masks to append per request (block - 1; 0 = none), or None when the batch keeps the
    old path. ``blocks``: each request's first block size (1 for plain requests)."""
    if page_size != 1 or batch.return_logprob or getattr(batch, "decoding_reqs", None):
        return None
    if getattr(batch, "seq_lens_cpu", None) is None:  # host lengths are needed to place the masks
        return None
    if getattr(batch, "input_embeds", None) is not None or any(getattr(batch, "multimodal_inputs", None) or []):
        return None
    counts = []
    for req, block, seq in zip(batch.reqs, blocks, batch.seq_lens_cpu.tolist()):
        last_chunk = getattr(req, "extend_end", None) == len(getattr(req, "full_untruncated_fill_ids", ()) or ())
        fits = seq + block - 1 <= columns
        counts.append(block - 1 if block > 1 and last_chunk and fits else 0)
    if not any(counts) or allocator.available_size() < sum(counts):
        return None
    return counts


@contextlib.contextmanager
def masked_extend(batch, counts, mask_id: int, req_to_token, allocator):
    """Append ``counts[i]`` masks to request i of an EXTEND ``batch`` for one forward.

    Yields the flat index of each request's last prompt row in the extended token stream
    (a list of B ints); everything is restored and the mask slots freed on exit.

    This runs on the time-to-first-token path, so it issues few tensor ops: the host does
    the layout arithmetic, runs of requests without masks stay one slice, and the lengths
    move by one add each."""
    dev = batch.input_ids.device
    saved = {n: getattr(batch, n) for n in ("input_ids", "out_cache_loc", "extend_lens", "seq_lens", "seq_lens_cpu",
                                            "seq_lens_sum", "extend_num_tokens")}
    total = sum(counts)
    slots = allocator.alloc(total)
    if slots is None:
        raise RuntimeError("no free KV slots for the prefill masks")  # mask_counts checked the pool
    try:
        ids, loc = batch.input_ids, batch.out_cache_loc
        slots_loc, slots_table = slots.to(loc.dtype), slots.to(req_to_token.dtype)
        masks = torch.full((total,), mask_id, dtype=ids.dtype, device=dev)
        pieces_ids, pieces_loc, last_rows = [], [], []
        run, offset, taken = 0, 0, 0  # run: start of the prompt tokens not yet placed
        seqs = batch.seq_lens_cpu.tolist()
        for i, (n, m) in enumerate(zip(batch.extend_lens, counts)):
            offset += n
            last_rows.append(offset + taken - 1)  # taken: the masks placed before request i
            if m:
                whole = run == 0 and offset == ids.shape[0]
                pieces_ids += [ids if whole else ids[run:offset], masks[taken:taken + m]]
                pieces_loc += [loc if whole else loc[run:offset], slots_loc[taken:taken + m]]
                req_to_token[batch.reqs[i].kv.req_pool_idx, seqs[i]:seqs[i] + m] = slots_table[taken:taken + m]
                run, taken = offset, taken + m
        if run < offset:
            pieces_ids.append(ids[run:])
            pieces_loc.append(loc[run:])
        extra = torch.tensor(counts, dtype=batch.seq_lens_cpu.dtype)
        batch.input_ids = torch.cat(pieces_ids)
        batch.out_cache_loc = torch.cat(pieces_loc)
        batch.extend_lens = [n + m for n, m in zip(batch.extend_lens, counts)]
        batch.extend_num_tokens = saved["extend_num_tokens"] + total
        batch.seq_lens_cpu = saved["seq_lens_cpu"] + extra
        batch.seq_lens = saved["seq_lens"] + extra.to(dev, saved["seq_lens"].dtype, non_blocking=True)
        batch.seq_lens_sum = (saved["seq_lens_sum"] + total if saved["seq_lens_sum"] is not None
                              else int(batch.seq_lens_cpu.sum()))
        yield last_rows
    finally:
        for name, value in saved.items():
            setattr(batch, name, value)
        allocator.free(slots)


def block_rows(last_rows, counts) -> dict:
    """The requests with masks (``sel``), their largest block ``K``, and the flat rows of
    their blocks (``rows`` int64 [len(sel) * K]: last prompt row, then the mask rows; a shorter
    block repeats its last row, which its scan never reads). Host arithmetic, one tensor."""
    sel = [i for i, m in enumerate(counts) if m]
    K = max(counts) + 1
    rows = [last_rows[i] + min(j, counts[i]) for i in sel for j in range(K)]
    return {"sel": sel, "K": K, "rows": torch.tensor(rows, dtype=torch.int64)}


@contextlib.contextmanager
def capture_block_logits(model, rows_box: dict):
    """While active, the model's logits processor also computes the logits of the flat
    hidden-state rows ``rows_box["rows"]`` (int64 [N]) into ``rows_box["logits"]`` [N, V].

    The rows ride the processor's own lm_head call (one read of the lm_head weights: on a
    small model that read is a good part of a short prefill); where that call cannot take
    them (data-parallel attention gathers rows across ranks) they get a call of their own."""
    lp = model.logits_processor
    original, original_get = lp.forward, lp._get_logits

    def forward(input_ids, hidden_states, lm_head, logits_metadata, *args, **kwargs):
        extra = {"states": hidden_states[rows_box["rows"].to(hidden_states.device)]}

        def get_logits(states, head, meta, embedding_bias=None, use_logits_buffer=True):
            mine = extra.pop("states", None)
            if mine is None or getattr(lp, "do_tensor_parallel_all_gather_dp_attn", False):
                if mine is not None:
                    extra["states"] = mine
                return original_get(states, head, meta, embedding_bias, use_logits_buffer)
            both = original_get(torch.cat([states, mine.to(states.dtype)]), head, meta, embedding_bias, False)
            rows_box["logits"] = both[states.shape[0]:]
            return both[:states.shape[0]]

        with overriding(lp, "_get_logits", get_logits):
            out = original(input_ids, hidden_states, lm_head, logits_metadata, *args, **kwargs)
        if "states" in extra:  # the processor's call did not take them
            from sglang.srt.layers.logits_processor import LogitsMetadata

            meta = logits_metadata
            if not isinstance(meta, LogitsMetadata):
                meta = LogitsMetadata.from_forward_batch(meta)
            rows_box["logits"] = original_get(extra["states"], lm_head, meta, use_logits_buffer=False)
        return out

    with overriding(lp, "forward", forward):
        yield rows_box
