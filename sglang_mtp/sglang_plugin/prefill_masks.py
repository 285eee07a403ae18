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
Stream order makes the early free safe for the KV: a later forward that reuses a slot runs after
this one. The allocator's free list is another matter on a GPU with overlap scheduling: the free
runs inside SGLang's forward-stream context, so the list's new tensor is built on the forward
stream, while later allocations read it on the schedule stream. That is ordered today only
because, after a prefill of this algorithm, SGLang makes the schedule stream wait for the
forward stream (its shared-read barrier falls back to a full wait for algorithms that do not
declare support for it). Listed in the README's "Only checkable on a GPU".

Requests keep the old first-step path (``state.first``) whenever this does not apply: a
batch asking for logprobs (mask rows would enter the input logprobs), multimodal or embedding
inputs, mixed decode requests, paged KV (page size > 1), no host copy of the sequence
lengths, a middle prefill chunk, a prompt within its block of the context end, or no free
slots. The logits of the block rows are computed by the model's own logits processor from the
forward's hidden states (:class:`PrefillLogits`), in the same lm_head call that gives SGLang's
sampler each masked request's row 0, so t1 needs no work of ours when the batch is greedy.
"""

from __future__ import annotations

import contextlib
from typing import List, Optional

import torch


def mask_counts(batch, blocks: List[int], allocator, page_size: int, columns: int,
                context: int) -> Optional[List[int]]:
    """Masks to append per request (block - 1; 0 = none), or None when the batch keeps the
    old path. ``blocks``: each request's first block size (1 for plain requests);
    ``columns``: the width of the request-to-token table; ``context``: the model's context
    length. A block whose last row would predict a position past the context's last keeps the
    old path, whose first decode step caps the block there as the reference decoder does (so
    no mask sits past the model's positions either)."""
    if page_size != 1 or batch.return_logprob or getattr(batch, "decoding_reqs", None):
        return None
    if getattr(batch, "seq_lens_cpu", None) is None:  # host lengths are needed to place the masks
        return None
    if getattr(batch, "input_embeds", None) is not None or any(getattr(batch, "multimodal_inputs", None) or []):
        return None
    counts = []
    for req, block, seq in zip(batch.reqs, blocks, batch.seq_lens_cpu.tolist()):
        last_chunk = getattr(req, "extend_end", None) == len(getattr(req, "full_untruncated_fill_ids", ()) or ())
        fits = seq + block - 1 <= columns and seq + block <= context
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
    the layout arithmetic, runs of requests without masks stay one slice, the mask ids are
    a cached tensor, a request holding every mask takes the mask tensors whole, and equal
    counts move the lengths by a scalar add."""
    saved = {n: getattr(batch, n) for n in ("input_ids", "out_cache_loc", "extend_lens", "seq_lens", "seq_lens_cpu",
                                            "seq_lens_sum", "extend_num_tokens")}
    total = sum(counts)
    slots = allocator.alloc(total)
    if slots is None:
        raise RuntimeError("no free KV slots for the prefill masks")  # mask_counts checked the pool
    try:
        ids, loc = batch.input_ids, batch.out_cache_loc
        slots_loc = slots if slots.dtype == loc.dtype else slots.to(loc.dtype)
        masks = _mask_ids(mask_id, total, ids)
        pieces_ids, pieces_loc, last_rows = [], [], []
        run, offset, taken = 0, 0, 0  # run: start of the prompt tokens not yet placed
        seqs = batch.seq_lens_cpu.tolist()
        for i, (n, m) in enumerate(zip(batch.extend_lens, counts)):
            offset += n
            last_rows.append(offset + taken - 1)  # taken: the masks placed before request i
            if m:
                whole, every = run == 0 and offset == ids.shape[0], m == total
                mine = slots_loc if every else slots_loc[taken:taken + m]
                pieces_ids += [ids if whole else ids[run:offset], masks if every else masks[taken:taken + m]]
                pieces_loc += [loc if whole else loc[run:offset], mine]
                req_to_token[batch.reqs[i].kv.req_pool_idx, seqs[i]:seqs[i] + m] = mine  # casts to the table's dtype
                run, taken = offset, taken + m
        if run < offset:
            pieces_ids.append(ids[run:])
            pieces_loc.append(loc[run:])
        batch.input_ids = torch.cat(pieces_ids)
        batch.out_cache_loc = torch.cat(pieces_loc)
        batch.extend_lens = [n + m for n, m in zip(batch.extend_lens, counts)]
        batch.extend_num_tokens = saved["extend_num_tokens"] + total
        if min(counts) == max(counts):  # one scalar for every request
            batch.seq_lens_cpu = saved["seq_lens_cpu"] + counts[0]
            batch.seq_lens = saved["seq_lens"] + counts[0]
        else:
            extra = torch.tensor(counts, dtype=batch.seq_lens_cpu.dtype)
            batch.seq_lens_cpu = saved["seq_lens_cpu"] + extra
            batch.seq_lens = saved["seq_lens"] + extra.to(ids.device, saved["seq_lens"].dtype, non_blocking=True)
        batch.seq_lens_sum = (saved["seq_lens_sum"] + total if saved["seq_lens_sum"] is not None
                              else int(batch.seq_lens_cpu.sum()))
        yield last_rows
    finally:
        for name, value in saved.items():
            setattr(batch, name, value)
        allocator.free(slots)


_MASK_IDS = {}  # (mask id, dtype, device, length) -> a tensor of that many mask ids; never written


def _mask_ids(mask_id: int, length: int, like: torch.Tensor) -> torch.Tensor:
    key = (mask_id, like.dtype, like.device, length)
    masks = _MASK_IDS.get(key)
    if masks is None:
        if len(_MASK_IDS) >= 64:
            _MASK_IDS.clear()
        masks = _MASK_IDS[key] = torch.full((length,), mask_id, dtype=like.dtype, device=like.device)
    return masks


def block_rows(last_rows, counts) -> dict:
    """The requests with masks (``sel``), their largest block ``K``, and the flat rows of
    their blocks (``rows`` int64 [len(sel) * K]: last prompt row, then the mask rows; a shorter
    block repeats its last row, which its scan never reads). Host arithmetic, one tensor; a
    single block is a run of consecutive rows, so its ``rows`` is a slice (indexing with it
    is a view, not a gather: the one-request prefill is the time-to-first-token case)."""
    sel = [i for i, m in enumerate(counts) if m]
    K = max(counts) + 1
    if len(sel) == 1:
        return {"sel": sel, "K": K, "rows": slice(last_rows[sel[0]], last_rows[sel[0]] + K)}
    rows = [last_rows[i] + min(j, counts[i]) for i in sel for j in range(K)]
    return {"sel": sel, "K": K, "rows": torch.tensor(rows, dtype=torch.int64)}


class PrefillLogits:
    """The model's logits processor during our prefills, installed once per worker.

    Outside our prefills (each marked by :meth:`begin` and :meth:`end`) the processor runs
    exactly as before. During one, the processor's rows get ``<MTP>`` at -inf (t1 is never the
    mask), so in an all-greedy batch SGLang's own argmax is t1; and with ``box`` (the masks rode
    the prefill, :func:`block_rows`) it also computes the logits of the flat hidden-state rows
    ``box["rows"]`` (int64 [N] or a slice, ``box["K"]`` per request of ``box["sel"]``) into
    ``box["logits"]`` [N, V]. Those rows ride the processor's own lm_head call (one read of the
    lm_head weights: on a small model that read is a good part of a short prefill), and that
    call also puts each masked request's block row 0 (its last prompt row, which predicts t1)
    where the processor would put its last row (a mask row, of no use here): ``box["row0"]`` is
    then True. Where that call cannot take the rows (data-parallel attention gathers rows across
    ranks) they get a call of their own and the processor's rows stay its last rows.

    It is installed once, as instance attributes of the processor, because replacing a
    module's attributes around every prefill costs tens of microseconds of time to first
    token on a CPU."""

    def __init__(self, model, mask_id: int):
        self.lp, self.mask_id = model.logits_processor, mask_id
        self._forward, self._get_logits = self.lp.forward, self.lp._get_logits
        self.active, self.box, self._states = False, None, None
        self.lp.forward, self.lp._get_logits = self.forward, self.get_logits

    def begin(self, box: Optional[dict] = None) -> None:
        """The next forward is a prefill of ours (``box``: its masks rode it)."""
        self.active, self.box = True, box

    def end(self) -> None:
        self.active, self.box, self._states = False, None, None

    def forward(self, input_ids, hidden_states, lm_head, logits_metadata, *args, **kwargs):
        if not self.active:
            return self._forward(input_ids, hidden_states, lm_head, logits_metadata, *args, **kwargs)
        box = self.box
        if box is not None:
            rows = box["rows"]
            self._states = hidden_states[rows if isinstance(rows, slice) else rows.to(hidden_states.device)]
        out = self._forward(input_ids, hidden_states, lm_head, logits_metadata, *args, **kwargs)
        if box is not None and self._states is not None:  # the processor's call did not take them
            from sglang.srt.layers.logits_processor import LogitsMetadata

            meta = logits_metadata
            if not isinstance(meta, LogitsMetadata):
                meta = LogitsMetadata.from_forward_batch(meta)
            box["logits"] = self._get_logits(self._states, lm_head, meta, use_logits_buffer=False)
            self._states = None
        if not (box or {}).get("row0"):
            out.next_token_logits[:, self.mask_id] = float("-inf")  # t1 is never <MTP>
        return out

    def get_logits(self, states, head, meta, embedding_bias=None, use_logits_buffer=True):
        mine, box = self._states, self.box
        if mine is None or getattr(self.lp, "do_tensor_parallel_all_gather_dp_attn", False):
            return self._get_logits(states, head, meta, embedding_bias, use_logits_buffer)
        self._states = None
        sel, K, n = box["sel"], box["K"], states.shape[0]
        mine = mine.to(states.dtype)
        if len(sel) == n:  # every request has masks: their rows 0 are the processor's rows
            box["logits"] = flat = self._get_logits(mine, head, meta, embedding_bias, False)
            main = flat.view(n, K, -1)[:, 0].clone()
        else:
            row0 = mine.view(len(sel), K, -1)[:, 0]
            states = states.index_copy(0, torch.tensor(sel, device=states.device), row0)
            both = self._get_logits(torch.cat([states, mine]), head, meta, embedding_bias, False)
            box["logits"], main = both[n:], both[:n]
        main[:, self.mask_id] = float("-inf")  # t1 is never <MTP>
        box["row0"] = True
        return main
