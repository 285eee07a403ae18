"""The MTP decoding worker: SGLang's speculative-worker contract around the fused step ops.

SGLang hands every batch to ``forward_batch_generation``:

- prefill (EXTEND): the target's ordinary forward, with each MTP request's k-1 ``<MTP>``
  tokens appended to its prompt (:mod:`.prefill_masks`): its last prompt row plus the mask
  rows are the reference decoder's first pass. The prefill emits t1 (the argmax with
  ``<MTP>`` suppressed; fallback requests keep SGLang's sample); the rest of the block waits
  in the request's state for its first decode step.
- decode: ONE forward of width W per request (``ForwardMode.TARGET_VERIFY``): the request's
  pending tokens followed by masks, so every request shares the forward whatever its k or
  tau. W and the step's block cap follow the load (:mod:`sglang_mtp.width`,
  ``--mtp-token-budget``); ``ops.step_inputs`` builds the forward from the per-slot state
  (:mod:`.state`), ``ops.confidence_scan`` / ``sample_scan`` scans its logits, and
  ``ops.accept_commit`` applies the accept rule and writes the next state: the semantics of
  :mod:`sglang_mtp.step` (the reference decoder). Requests whose masks could not ride the
  prefill take the old first step instead: it re-feeds the last prompt token so that its block
  is the reference decoder's first pass (:mod:`sglang_mtp.ops.step_reference`).

KV: SGLang has already reserved the slots after each request's committed KV in
``req_to_token`` (2*W per request); the forward writes its W tokens there, so committing the
``keep`` real tokens is ``new_seq_lens = seq_lens + keep`` (``ops.accept_commit``) and nothing
moves: releasing the mask slots per step would double-free slots SGLang still counts as
allocated (SGLang frees the uncommitted tail with the request). :mod:`.commit` keeps SGLang's
committed length equal to the real KV. Under tensor parallelism rank 0's decisions are
broadcast before any state is written (:mod:`.rank_sync`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time

import numpy as np
import torch
from sglang.srt.layers.logprob_processor import compute_spec_logprobs
from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import ForwardMode
from sglang.srt.speculative.base_spec_worker import BaseSpecWorker

from sglang_mtp import ops
from sglang_mtp.sampling import RowSampling
from sglang_mtp.step import block_args, sample_tokens, strategy_tensors
from sglang_mtp.strategy import MAX_K
from sglang_mtp.width import AutoWidthPolicy, step_cap

from . import calibrate, plain, prefill_masks, width_graphs
from .rank_sync import sync_from_rank0, tp_broadcast
from .flags import (MTPConfig, check_attention_only, check_cuda_kernels, check_mask_in_vocab, resolve_mask_token_id,
                    trusts_remote_code)
from .params import request_strategy
from .patching import overriding
from .spec_input import MTPRelay, MTPVerifyInput
from .state import GREEDY, MTPState

logger = logging.getLogger(__name__)


class MTPWorker(BaseSpecWorker):
    """Speculative worker without a draft model: the target predicts its own blocks."""

    def __init__(self, server_args, gpu_id, nccl_port, target_worker):
        super().__init__()
        self.server_args = server_args
        self._target_worker = target_worker
        self._draft_worker = None
        self.model_runner = target_worker.model_runner
        self.device = self.model_runner.device
        self.config = MTPConfig.from_env()
        self.width = self.config.width
        self.speculative_num_draft_tokens = self.width
        self.default_strategy = self.config.strategy_obj()
        self.policy = self.config.width_policy(str(self.device))
        self._narrow = None  # known once SGLang has built the attention backends (narrow())
        self.broadcast = tp_broadcast()  # rank 0 decides under TP (rank_sync.py); None on one rank
        self.calibrating = self.config.token_budget == "auto"  # at the first decode step (calibrate.py)
        self.step_caps = collections.deque(maxlen=16)  # (batch size, cap) of steps awaiting results
        self.mask_id = resolve_mask_token_id(
            self.model_runner.model_config.hf_config,
            server_args.tokenizer_path or server_args.model_path,
            self.config.mask_token_id,
            trusts_remote_code(server_args),
        )
        check_cuda_kernels(str(self.device))  # defence in depth: the launcher checked it too
        check_mask_in_vocab(self.mask_id, self.model_runner.model_config.vocab_size)
        check_attention_only(self.model_runner.model_config)
        self.max_position = self.model_runner.model_config.context_len
        self.mask_index = torch.tensor([self.mask_id], dtype=torch.int64, device=self.device)
        self.state = None
        self._admissions = collections.deque()  # prefills whose state _settle writes next forward
        self._scan_rows = {}  # batch size -> (rows, ones, zeros) of a one-row-per-request scan
        model = self.model_runner.model  # its logits processor during our prefills (prefill_masks.py)
        self.prefill_logits = prefill_masks.PrefillLogits(model, self.mask_id) if hasattr(
            model, "logits_processor") else None
        self.graphs = width_graphs.WidthGraphs(self.model_runner)  # CUDA graphs per width (GPU)
        self._capture_sizes = None  # SGLang's capture list before the token budget capped it
        logger.info("MTP worker: %s, width %d, mask id %d; widths: %s", self.default_strategy, self.width,
                    self.mask_id, self.policy.describe())

    @property
    def draft_worker(self):
        return None

    def alloc_memory_pool(self, memory_pool_config=None, req_to_token_pool=None, token_to_kv_pool_allocator=None):
        self.req_to_token_pool, self.token_to_kv_pool_allocator = self._target_worker.get_memory_pool()
        pool_size = self.req_to_token_pool.req_to_token.shape[0]
        self.state = MTPState(pool_size, self.width, self.device)
        self.page_size = getattr(self.token_to_kv_pool_allocator, "page_size", 1)

    # -- CUDA graphs (width_graphs.py; GPU only) ----------------------------------------------
    def init_attention_backends(self):
        """Runs before SGLang captures its graphs: a fixed token budget caps the batch sizes
        the full width is captured for (wider batches never run the full width)."""
        if str(self.device).startswith("cuda") and self.narrow() and self.policy.budget > 0:
            self._capture_sizes = width_graphs.cap_startup_sizes(width_graphs.startup_cap(self.policy.budget,
                                                                                          self.width))

    def init_cuda_graphs(self):
        """Runs after SGLang's capture: graph sets for the narrower widths and plain batches."""
        cfg = width_graphs.graph_config()
        shared = getattr(self.model_runner, "graph_shared_output", None)
        if not str(self.device).startswith("cuda") or cfg is None or not cfg.decode.bs or shared is None:
            return
        sizes = self._capture_sizes or list(cfg.decode.bs)
        adaptive = self.narrow() and (self.policy.adaptive or self.calibrating)
        plan = width_graphs.plan_sets(self.policy.widths, self.width, self.policy.budget, shared.max_rows, sizes,
                                      adaptive)
        self.graphs.build(plan, self.width, self._additional_graph_memory_usage)
        logger.info("MTP graph memory per width: %s", self.graphs.describe())

    def forward_batch_generation(self, batch, on_publish=None, pp_proxy_tensors=None, **kwargs):
        self._settle()
        if batch.forward_mode.is_decode():
            return self._decode(batch, on_publish)
        return self._prefill(batch, on_publish)

    # -- prefill ---------------------------------------------------------------------------
    def _prefill(self, batch, on_publish):
        plans = [request_strategy(r, self.default_strategy) for r in batch.reqs]
        left = [tokens_left(r) for r in batch.reqs]
        blocks, cap = self._first_blocks(plans, left)
        counts = prefill_masks.mask_counts(batch, blocks, self.token_to_kv_pool_allocator, self.page_size,
                                           self.req_to_token_pool.req_to_token.shape[1], self.max_position) if (
            blocks and self.prefill_logits is not None) else None
        # SGLang's sampler turns the logits into probabilities in place; MTP sampling needs
        # the logits themselves. (Plain `with` statements: this is the time-to-first-token path.)
        sampling = any(p.sampling is not None for p in plans)
        hooked = self.prefill_logits is not None and not batch.return_logprob  # logprobs see every id
        with (_raw_logits(self.model_runner) if sampling else _NOTHING) as raw, (prefill_masks.masked_extend(
                batch, counts, self.mask_id, self.req_to_token_pool.req_to_token, self.token_to_kv_pool_allocator)
                if counts else _NOTHING) as last_rows:
            box = prefill_masks.block_rows(last_rows, counts) if counts else None  # masks ride the prefill
            if hooked:
                self.prefill_logits.begin(box)
            try:
                result = self._target_worker.forward_batch_generation(batch)
            finally:
                if hooked:
                    self.prefill_logits.end()
        bs = len(batch.reqs)
        if bs > 0 and result.logits_output is not None and result.next_token_ids is not None:
            self._admit(batch, result, plans, raw.get("logits") if sampling else None, box, blocks, cap, hooked,
                        ends_here=max(left) <= 1)
        new_seq_lens = batch.seq_lens  # the prompt's KV is all committed; a copy would make
        # SGLang's non-overlap scheduler read it back from the device (a sync per prefill)
        if on_publish is not None:
            on_publish(new_seq_lens)
        result.accept_lens = self._one_row_blocks(bs)[1]  # int32 ones; SGLang only reads it
        result.new_seq_lens = new_seq_lens
        result.next_draft_input = MTPRelay(bonus_tokens=result.next_token_ids, new_seq_lens=new_seq_lens)
        result.speculative_num_draft_tokens = self.width
        return result

    def _first_blocks(self, plans, left=None):
        """(each request's first block size (1 = no masks), the block cap): its k, capped like
        any block (sglang_mtp.width.step_cap) by the width policy's cap for the batch it will
        decode in, the running requests and this prefill's (:func:`live_requests`). Capped for
        the prefill batch alone, a request joining a busy server would bring a block wider than
        the running batch's cap, and the next decode step of the whole batch would be wider.
        ``left``: the tokens each request may still emit (:func:`tokens_left`); a block is
        capped by them too, since rows past them could only predict tokens the request never
        emits (row j sees only the inputs before it, so the rows kept are unchanged).
        No blocks when no request of the batch decodes with MTP."""
        if not any(p.strategy.k > 1 and not p.fallback for p in plans):
            return [], ops.NO_CAP
        adaptive = self.narrow() and self.policy.adaptive
        cap = self.policy.cap(live_requests(self.req_to_token_pool, len(plans))) if adaptive else MAX_K
        blocks = [1 if p.fallback else step_cap(p.strategy.k, cap) for p in plans]
        if left is not None:
            blocks = [min(b, max(1, n)) for b, n in zip(blocks, left)]
        return blocks, cap

    def _admit(self, batch, result, plans, raw_logits, box, blocks, cap, hooked, ends_here=False):
        """The prefill's first token of each request: the argmax with <MTP> suppressed, or
        (MTP sampling) the sample of position P, the same draw as the reference decoder's.
        For requests whose masks rode the prefill (``box``) that row is their block's row 0
        (the last prompt row; SGLang's own last row is their last mask). Only the first
        tokens are computed here; the requests' state and the scan of their first blocks wait
        for the start of the next forward (:meth:`_settle`), so t1 is not kept waiting.
        ``ends_here``: every request ends with t1 (``max_new_tokens`` 1), so none is admitted:
        it would never decode, and its state would be written at the next request's prefill."""
        logits = raw_logits if raw_logits is not None else result.logits_output.next_token_logits
        job = None
        if box is not None:
            sel, K = box["sel"], box["K"]
            everyone = len(sel) == len(batch.reqs)
            picked = [plans[i] for i in sel]
            sampled = any(p.sampling is not None for p in picked)
            sel_t = None if everyone or (box.get("row0") and not sampled) else torch.tensor(
                sel, dtype=torch.int64).to(self.device, non_blocking=True)  # only where rows are picked below
            if not box.get("row0"):  # the processor's rows are the last mask rows: take the blocks' rows 0
                row0 = box["logits"].to(logits.device).view(len(sel), K, -1)[:, 0]
                logits = row0 if everyone else logits.index_copy(0, sel_t.to(logits.device), row0.to(logits.dtype))
            positions = None  # sampling only: the prompt lengths (row 0 predicts position P), a copy:
            if sampled:  # SGLang owns batch.seq_lens after this step
                positions = (batch.seq_lens if everyone else batch.seq_lens[sel_t]).to(torch.int64, copy=True)
            job = {"sel": sel, "K": K, "logits": box["logits"], "plans": picked, "blocks": [blocks[i] for i in sel],
                   "cap": cap, "positions": positions}
        given = hooked and (box is None or box.get("row0", False))
        first = self._first_tokens(batch, result, plans, logits, raw_logits is not None, argmax_given=given)
        sync_from_rank0([first], self.broadcast)
        result.next_token_ids = first
        if ends_here:
            return
        masked = set(box["sel"]) if box is not None else set()
        # A block of 1 (cap 1): the prefill was the request's first step; it goes on from t1.
        started = [bool(blocks) and blocks[i] == 1 and p.strategy.k > 1 and not p.fallback
                   for i, p in enumerate(plans)]
        if any(p.strategy.k > 1 and not started[i] for i, p in enumerate(plans) if i not in masked):
            ends = torch.from_numpy(np.cumsum(batch.extend_lens) - 1).to(self.device, non_blocking=True)
            last_prompt = batch.input_ids.to(torch.int64)[ends]  # an old first step re-feeds it
        else:
            last_prompt = first  # unused: every MTP request's first step was its prefill
        self._admissions.append((_host_rows(batch).copy(), plans, last_prompt, first, job, started))

    def _first_tokens(self, batch, result, plans, logits, sampling, argmax_given=False):
        """t1 of every request from ``logits`` [bs, V] (its row predicting position P;
        ``sampling``: raw logits, some request samples); sampler fallbacks keep SGLang's
        sample. ``argmax_given``: those rows, with ``<MTP>`` at -inf, are the ones SGLang's
        sampler read (prefill_masks.PrefillLogits), so in an all-greedy batch its argmax is
        t1 (ties go to the lowest id there as in our scan)."""
        if argmax_given and not sampling and batch.sampling_info.is_all_greedy and not any(p.fallback for p in plans):
            return result.next_token_ids.to(torch.int64)
        rows, ones, zeros = self._one_row_blocks(len(batch.reqs))
        logits = logits.contiguous()
        if not sampling:
            tokens, _, _ = ops.confidence_scan(logits, rows, ones, zeros, None, self.mask_id)
        else:
            rs = RowSampling.build([p.sampling or GREEDY for p in plans], [p.seed for p in plans], self.device)
            tokens, _ = sample_tokens(logits, rows, ones, zeros, None, self.mask_id, rs, batch.seq_lens, 1)
        if not any(p.fallback for p in plans):
            return tokens
        sampled = torch.tensor([p.fallback for p in plans], dtype=torch.bool).to(self.device, non_blocking=True)
        return torch.where(sampled, result.next_token_ids.to(torch.int64), tokens)

    def _one_row_blocks(self, bs):
        """(block starts 0..bs-1, lengths 1, thresholds 0): scan arguments that take each of
        ``bs`` rows as a block of its own (the lengths double as a prefill's accept lengths).
        Cached per batch size: they are on the time-to-first-token path and never written."""
        blocks = self._scan_rows.get(bs)
        if blocks is None:
            rows = torch.arange(bs, dtype=torch.int32, device=self.device)
            blocks = self._scan_rows[bs] = (rows, torch.ones_like(rows),
                                            torch.zeros(bs, dtype=torch.float32, device=self.device))
        return blocks

    def _scan_blocks(self, job):
        """The scan of the first blocks that rode the prefill (the reference decoder's first
        pass: last prompt row + mask rows, ``job["K"]`` rows per request). Blocks start at the
        last prompt row (``step.block_args`` with that one pending token); verify blocks are
        that one row (their mask rows are drafts). Row 0's token is the t1 :meth:`_admit`
        emitted: the same scan of the same row."""
        picked, K, dev = job["plans"], job["K"], self.device
        k = torch.tensor(job["blocks"], dtype=torch.int32).to(dev, non_blocking=True)
        _, thr, ver = strategy_tensors([p.strategy for p in picked], dev)
        one = torch.ones_like(k)
        starts, length, tau = block_args(one, torch.zeros_like(k), k, thr, ver, K)  # pending = [x_{P-1}]
        logits = job["logits"].to(dev).contiguous()
        if job["positions"] is not None:
            rs = RowSampling.build([p.sampling or GREEDY for p in picked], [p.seed for p in picked], dev)
            tokens, accept_len = sample_tokens(logits, starts, length, tau, None, self.mask_id, rs,
                                               job["positions"].to(dev), K)
        else:
            tokens, _, accept_len = ops.confidence_scan(logits, starts, length, tau, None, self.mask_id)
        sync_from_rank0([tokens, accept_len], self.broadcast)
        return {"sel": torch.tensor(job["sel"], dtype=torch.int64).to(dev, non_blocking=True),
                "sel_host": np.asarray(job["sel"]), "K": K, "tokens": tokens, "accept_len": accept_len,
                "cap": job["cap"], "blocks": job["blocks"], "lossy": [not p.strategy.is_verify for p in picked]}

    def _settle(self):
        """Write the state of the requests admitted by earlier prefills (:meth:`_admit`) and
        start the blocks that rode their prefill."""
        while self._admissions:
            idx, plans, last_prompt, first, job, started = self._admissions.popleft()
            rows = torch.from_numpy(idx).to(self.device, non_blocking=True)
            strategies, sampled, samplings, seeds = zip(*plans)
            self.state.admit(rows, idx, strategies, sampled, last_prompt, first, samplings, seeds, started)
            if job is not None:
                self._start_blocks(rows, idx, self._scan_blocks(job))

    def _start_blocks(self, rows, idx, scan):
        """Requests whose first block rode the prefill: their first step is the prefill's,
        so ``accept_commit`` over its scan leaves them in the reference decoder's state after
        its first pass (lossy: pending t1..t_a, of which t2..t_a are emitted by the next
        decode step; verify: t1 + k-1 drafts). Nothing is committed: the prompt's KV already is."""
        sel_rows = rows[scan["sel"]]
        state = self.state
        _, emit_len, *_ = ops.accept_commit(
            scan["tokens"], scan["accept_len"], sel_rows, torch.zeros_like(sel_rows, dtype=torch.int64),
            state.pending, state.pending_len, state.draft_len, state.k, state.verify, state.first,
            state.first_token, state.sampled, None, self.mask_id, scan["K"], scan["cap"])
        state.start_blocks(sel_rows, idx[scan["sel_host"]], emit_len, scan["blocks"], scan["lossy"])

    # -- decode ----------------------------------------------------------------------------
    def _decode(self, batch, on_publish):
        """One decode step: four calls (step_inputs, forward, confidence_scan, accept_commit)
        plus SGLang's own bookkeeping, whatever the batch size."""
        rows = batch.req_pool_indices  # [B]
        idx = _host_rows(batch)  # [B] numpy, for the host-side decisions
        state = self.state
        if self.calibrating and self.narrow():
            self._calibrate(batch)
        if plain.can_bypass(batch, state, idx):
            self.step_caps.append((len(idx), None))
            result = plain.plain_decode(self, batch, on_publish)
            batch.forward_mode = ForwardMode.DECODE
            return result
        width, k_cap = self._step_width(idx)
        input_ids, positions, attn_lens, loc, start, length, tau = ops.step_inputs(
            *state.tensors(), rows, batch.seq_lens, self.req_to_token_pool.req_to_token, self.mask_id, width,
            self.max_position, k_cap)
        first = state.host_first[idx]
        if batch.seq_lens_cpu is not None and first.any():
            # First steps attend from P-1 (see ops.step_inputs); keep the host mirror in step.
            batch.seq_lens_cpu = batch.seq_lens_cpu - torch.from_numpy(first.astype(np.int64))
            batch.seq_lens_sum = int(batch.seq_lens_cpu.sum())
        if CHECK_HOST_LENGTHS:
            _check_host_lengths(batch, attn_lens)
        batch.seq_lens = attn_lens
        batch.forward_mode = ForwardMode.TARGET_VERIFY
        batch.input_ids = input_ids.reshape(-1)
        batch.out_cache_loc = loc.reshape(-1)
        batch.spec_info = MTPVerifyInput(positions.reshape(-1), width)
        with self.graphs.bound(width_graphs.VERIFY, width):
            result = self._target_worker.forward_batch_generation(batch, is_verify=True)
        logits = result.logits_output.next_token_logits  # [B * W, V]

        samples = self._sample_fallback(batch, logits, positions, width) if state.any_sampled(idx) else None
        sampling = state.row_sampling(rows, idx)
        if sampling is None:
            tokens, _, accept_len = ops.confidence_scan(logits.contiguous(), start, length, tau, None, self.mask_id)
        else:  # row j of request b predicts position positions[b, 0] + 1 + j
            tokens, accept_len = sample_tokens(logits.contiguous(), start, length, tau, None, self.mask_id,
                                               sampling, positions[:, 0] + 1, width)
        sync_from_rank0([tokens, accept_len, samples], self.broadcast)
        unsent = state.take_unsent(rows, idx)  # block tokens decided by the prefill, not sent yet
        emitted, emit_len, new_seq_lens, last, emit_rows, predict = ops.accept_commit(
            tokens, accept_len, rows, attn_lens, state.pending, state.pending_len, state.draft_len, state.k,
            state.verify, state.first, state.first_token, state.sampled, samples, self.mask_id, width, k_cap)
        state.stepped(idx)
        if unsent is not None:
            emitted, emit_len, last = _prepend(emitted, emit_len, *unsent, width)
        if batch.return_logprob:
            compute_spec_logprobs(batch, result.logits_output, predict, accept_index=emit_rows)
        if on_publish is not None:
            on_publish(new_seq_lens)
        batch.forward_mode = ForwardMode.DECODE
        return GenerationBatchResult(
            logits_output=result.logits_output,
            next_token_ids=emitted.reshape(-1),  # stride W + 1, see commit.py
            can_run_cuda_graph=result.can_run_cuda_graph,
            accept_lens=emit_len,
            cap_lens=torch.full((len(idx),), width, dtype=torch.int32),  # widths in meta_info (metrics.py)
            new_seq_lens=new_seq_lens,
            next_draft_input=MTPRelay(bonus_tokens=last, new_seq_lens=new_seq_lens),
            speculative_num_draft_tokens=width,
            speculative_output_stride=width + 1,
            num_non_draft_tokens_per_req=0,
        )

    def narrow(self) -> bool:
        """Whether steps may be narrower than 2*k_max-1 (see NARROW_BACKENDS)."""
        if self._narrow is None:
            self._narrow = _sizes_verify_from_batch(self.model_runner)
        return self._narrow

    def _calibrate(self, batch) -> None:
        """``--mtp-token-budget auto``: time dummy forwards shaped like ``batch`` once."""
        self.calibrating = False
        limit = getattr(self.server_args, "max_running_requests", None) or 256
        rows = calibration_rows(self.model_runner)
        t0 = time.perf_counter()
        costs = calibrate.measure(self, batch, self.policy.widths, min(int(limit), 256), max_tokens=rows,
                                  broadcast=self.broadcast)
        self.policy = AutoWidthPolicy(self.config.k_max, costs, max_tokens=rows)
        logger.info("MTP width policy %s; calibration took %.1f s", self.policy.describe(), time.perf_counter() - t0)

    def on_verify_complete_cpu(self, num_correct_drafts_per_req, batch_size: int = 0) -> None:
        """SGLang's host-side accept counts of a decode step (tokens per request): they feed
        the auto width policy's tokens-per-step estimate of the step's cap."""
        while self.step_caps:
            size, cap = self.step_caps.popleft()
            if size == batch_size:
                if cap is not None and isinstance(self.policy, AutoWidthPolicy):
                    self.policy.observe(cap, num_correct_drafts_per_req)
                return

    def _step_width(self, idx):
        """(width, k_cap) of a decode step over the requests ``idx`` (host pool rows).

        Fixed width (``--mtp-token-budget 0``): 2*k_max-1, or 1 for a batch of plain
        requests, and no cap. Load-adaptive: the policy's cap for this batch size and the
        narrowest width that holds every request's pending tokens and capped block."""
        if not self.narrow():  # this attention backend sizes verify batches from the server's width
            self.step_caps.append((len(idx), None))
            return self.width, ops.NO_CAP
        if not self.policy.adaptive:
            self.step_caps.append((len(idx), None))
            return (1 if self.state.all_plain(idx) else self.width), ops.NO_CAP
        cap = self.policy.cap(len(idx))
        need = self.state.plan_step(idx, cap)
        self.step_caps.append((len(idx), cap))
        return self.policy.step_width(need), cap

    def _sample_fallback(self, batch, logits, positions, width):
        """SGLang's own sampler on each request's row 0 (temperature, grammar, penalties...).

        Only fallback requests use the result; they decode one token per step, from row 0.
        """
        B = positions.shape[0]
        row0 = logits.view(B, width, -1)[:, 0].clone()  # [B, V]
        row0.index_fill_(1, self.mask_index, float("-inf"))  # <MTP> is never emitted
        return plain.sample(self.model_runner, batch, row0, positions[:, 0])


def calibration_rows(model_runner) -> int:
    """The most query rows of a forward ``auto`` may choose: with CUDA graphs, the rows of
    their shared logits buffer (a wider forward would run eagerly, with its fp32 logits, about
    2.5 GB at 4096 rows of a 150k vocabulary, on top of the memory SGLang planned); else 4096."""
    shared = getattr(model_runner, "graph_shared_output", None)
    rows = getattr(shared, "max_rows", None)
    return min(calibrate.MAX_ROWS, int(rows)) if isinstance(rows, int) and rows > 0 else calibrate.MAX_ROWS


def tokens_left(req) -> int:
    """The tokens a request may still emit: its ``max_new_tokens`` less its output so far
    (a retracted request resumes with some), or MAX_K when it sets none."""
    limit = req.sampling_params.max_new_tokens
    return MAX_K if limit is None else int(limit) - len(req.output_ids)


def live_requests(req_to_token_pool, prefilling: int) -> int:
    """Requests holding a row of SGLang's request pool (running, being prefilled, or finished
    and not yet released), at least ``prefilling``. A host count, no device read."""
    try:
        return max(prefilling, int(req_to_token_pool.size) - int(req_to_token_pool.available_size()))
    except (AttributeError, TypeError):
        return prefilling


def _prepend(emitted, emit_len, tokens, count, width: int):
    """Emit ``tokens[b, 1:1+count[b]]`` (a prefill block's t2..t_a) before this step's tokens.

    emitted: [B, W+1] (tokens, then the keep column); tokens: [B, Pw] the requests' pending
    tokens before the step; count: [B]. Returns (emitted, emit_len, last_token)."""
    c = torch.arange(width, device=emitted.device)[None, :]
    count = count.long()[:, None]
    early = tokens.gather(1, (1 + c).clamp(max=tokens.shape[1] - 1).expand(tokens.shape[0], -1))
    late = emitted[:, :width].gather(1, (c - count).clamp(min=0))
    n = emit_len.long()[:, None] + count
    out = torch.where(c < n, torch.where(c < count, early, late), 0)
    last = out.gather(1, (n - 1).clamp(min=0))[:, 0]
    return torch.cat([out, emitted[:, width:]], dim=1), n[:, 0].to(emit_len.dtype), last


# Attention backends whose TARGET_VERIFY path takes the query width from the batch (our
# MTPVerifyInput), so a step may be narrower than 2*k_max-1: torch_native through
# cpu_shims / verify_attention (tested), FlashInfer through MTPVerifyInput's
# generate_attn_arg_prefill (GPU; bench/gpu_check.sh). Others (FA3, Triton, TRT-LLM MHA,
# FlashMLA) size verify metadata from the server's speculative_num_draft_tokens, so a
# narrower batch would read or write out of bounds: they always run the full width.
NARROW_BACKENDS = ("TorchNativeAttnBackend", "FlashInferAttnBackend")


def _sizes_verify_from_batch(model_runner) -> bool:
    names = {type(getattr(model_runner, n, None)).__name__ for n in ("attn_backend", "decode_attn_backend")}
    names.discard("NoneType")
    if not names or not names <= set(NARROW_BACKENDS):
        logger.warning("MTP: attention backend %s sizes verify batches from the server's width: every "
                       "decode step runs the full width 2*k_max-1 (no load-adaptive width)", sorted(names))
        return False
    return True


_NOTHING = contextlib.nullcontext()


@contextlib.contextmanager
def _raw_logits(model_runner):
    """Keep a copy of the logits SGLang's sampler is about to overwrite (``box["logits"]``)."""
    box, original = {}, model_runner.sample

    def sample(logits_output, forward_batch, *args, **kwargs):
        box["logits"] = logits_output.next_token_logits.clone()
        return original(logits_output, forward_batch, *args, **kwargs)

    with overriding(model_runner, "sample", sample):
        yield box


# Tests set this (tests/sglang/live_server.child_env): every decode step checks that the host
# lengths equal the device's. A sync-free FlashInfer plan (flashinfer_plan.py) is built from
# the host copy alone, so a mismatch there would be silently wrong attention on a GPU.
CHECK_HOST_LENGTHS = os.environ.get("SGLANG_MTP_CHECK_HOST_LENGTHS") == "1"


def _check_host_lengths(batch, attn_lens) -> None:
    host = batch.seq_lens_cpu
    if host is None:
        return
    device = attn_lens.to("cpu", torch.int64)
    if not torch.equal(host.to(torch.int64), device) or (
            batch.seq_lens_sum is not None and batch.seq_lens_sum != int(device.sum())):
        raise AssertionError(f"MTP: host KV lengths {host.tolist()} (sum {batch.seq_lens_sum}) differ from the "
                             f"device's {device.tolist()}")


def _host_rows(batch) -> np.ndarray:
    """The batch's pool rows on the host (SGLang keeps a CPU copy; no device read)."""
    idx = batch.req_pool_indices_cpu
    if idx is None or len(idx) != len(batch.reqs):
        return np.array([r.kv.req_pool_idx for r in batch.reqs], dtype=np.int64)
    return idx.numpy()
