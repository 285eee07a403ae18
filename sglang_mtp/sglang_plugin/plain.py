"""Decode steps where every request decodes one token (``{"mtp": false}``, ``k_max`` 1,
sampler fallbacks): SGLang's own plain decode forward, not the W-wide verify forward.

Such a batch needs no masks, no accept rule and no block bookkeeping, so the worker runs it
as a ``ForwardMode.DECODE`` forward (one query per request, SGLang's decode attention path)
and samples with SGLang's own sampler (greedy, temperature, grammar, penalties, exactly as
plain SGLang). The ``<MTP>`` id is suppressed on device by setting its logits column to
-inf before sampling (one ``index_fill_`` on [B, V], no host sync), so it is never emitted.

Speculative conventions still hold around it: SGLang's ``seq_lens`` is the committed KV
length (the last emitted token has no KV yet: it is the query), the slot it writes is the
first one reserved after the committed KV, and the result is stride-padded with the ``keep``
column of :mod:`.commit` (keep = 1: the query's KV is real-token KV).

On GPU, SGLang captured its decode graphs for TARGET_VERIFY (W tokens per request); a DECODE
batch must not replay them (:func:`~.graphs.register` refuses a graph of another mode), so it
runs under the worker's own DECODE graph set (:mod:`.width_graphs`), eagerly where there is
none.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from .rank_sync import sync_from_rank0
from .spec_input import MTPRelay
from .width_graphs import DECODE


def can_bypass(batch, state, idx) -> bool:
    """Whether a decode batch can take the plain path: every request decodes one token per
    step (k == 1, so none is in a first MTP step) and no logprobs are asked for (their
    speculative bookkeeping lives in the verify path)."""
    return not batch.return_logprob and state.all_plain(idx)


def plain_decode(worker, batch, on_publish) -> GenerationBatchResult:
    """One plain decode step of ``batch`` (see the module docstring)."""
    rows = batch.req_pool_indices  # [B]
    committed = batch.seq_lens  # [B] KV in the cache; the pending token is the query
    tokens = worker.state.pending[rows, 0]  # [B] int64, the last emitted token
    loc = worker.req_to_token_pool.req_to_token[rows, committed].to(torch.int64)
    batch.input_ids = tokens
    batch.out_cache_loc = loc
    batch.seq_lens = committed + 1  # DECODE convention: KV length including the query
    if batch.seq_lens_cpu is not None:
        batch.seq_lens_cpu = batch.seq_lens_cpu + 1
    batch.seq_lens_sum = None  # recomputed by ForwardBatch.init_new
    batch.forward_mode = ForwardMode.DECODE
    batch.spec_info = None
    with worker.graphs.bound(DECODE, 1):  # its own graphs (width_graphs.py)
        result = worker._target_worker.forward_batch_generation(batch, is_verify=True)  # no sampling
    logits = result.logits_output.next_token_logits  # [B, V]
    logits.index_fill_(1, worker.mask_index, float("-inf"))
    nxt = sample(worker.model_runner, batch, logits, committed)  # [B]
    sync_from_rank0([nxt], worker.broadcast)
    worker.state.pending[rows, 0] = nxt
    new_seq_lens = committed + 1
    if on_publish is not None:
        on_publish(new_seq_lens)
    keep = torch.ones_like(nxt)
    return GenerationBatchResult(
        logits_output=result.logits_output,
        next_token_ids=torch.stack([nxt, keep], dim=1).reshape(-1),  # stride 2, see commit.py
        can_run_cuda_graph=result.can_run_cuda_graph,
        accept_lens=torch.ones_like(nxt, dtype=torch.int32),
        new_seq_lens=new_seq_lens,
        next_draft_input=MTPRelay(bonus_tokens=nxt, new_seq_lens=new_seq_lens),
        speculative_num_draft_tokens=1,
        speculative_output_stride=2,
        num_non_draft_tokens_per_req=0,
    )


def sample(model_runner, batch, logits, positions) -> torch.Tensor:
    """SGLang's sampler on ``logits`` [B, V] (one row per request) -> int64 [B].

    The sampler only reads these fields of a ForwardBatch; building the whole ForwardBatch
    again would cost more than the tiny forward it follows.
    """
    fake = SimpleNamespace(
        sampling_info=batch.sampling_info, return_logprob=False, top_logprobs_nums=None,
        token_ids_logprobs=None, positions=positions, forward_mode=ForwardMode.DECODE,
        req_pool_indices=batch.req_pool_indices, ngram_embedding_info=None,
    )
    return model_runner.sample(LogitsProcessorOutput(next_token_logits=logits), fake).to(torch.int64)
