"""``--mtp-token-budget auto``: measure what a decode forward costs per batch size and width.

Runs once, at the server's first decode step, on dummy TARGET_VERIFY forwards built from that
step's batch: its requests repeated up to each batch size (their committed KV is only read),
every query a ``<MTP>`` token, and every KV write sent to slot 0, SGLang's padding slot. No
request state changes. The timings feed :class:`sglang_mtp.width.AutoWidthPolicy`.

Under tensor parallelism every rank must run the same dummy forwards (each one holds
collectives) and then pick the same widths (a width is a forward shape), but each rank times
its own forwards. So rank 0's timings win: each batch size's row is broadcast from rank 0
(:mod:`.rank_sync`) before it decides whether to measure a larger batch, and so is rank 0's
count of timed runs of each forward, which depends on how long its warm-up took.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time

import torch
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from .rank_sync import sync_from_rank0
from .spec_input import MTPVerifyInput
from .width_graphs import VERIFY

logger = logging.getLogger(__name__)


def batch_sizes(max_batch: int):
    """1, 2, 4, ... up to ``max_batch`` (included)."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


MAX_ROWS = 4096  # the most query rows a calibrated width may take per forward (without CUDA graphs)


def measure(worker, template, widths, max_batch: int, reps: int = 3, max_tokens: int = MAX_ROWS,
            max_seconds: float = 0.25, broadcast=None, slow: float = 0.05, clock=time.perf_counter):
    """costs[b][w]: median seconds of a width-``w`` forward of ``b`` requests.

    Bounded so that start-up stays short on a slow device:
    - forwards of more than ``max_tokens`` query tokens are not run (infinite cost: never
      chosen);
    - no larger batch is measured once a width-1 forward takes ``max_seconds``, or once at
      two batch sizes in a row no wider width could pay even with every block accepted
      (:func:`can_pay`). Larger batches then use the largest measured one's choice. One size
      is not enough: on a CPU a forward of 1 row is a matrix-vector product and one of 2 rows
      is not, so widths can fail to pay at 1 request and pay at 2;
    - a forward whose warm-up took more than ``slow`` seconds is timed once, not ``reps``
      times (its timing noise is small next to it). Under TP rank 0's warm-up decides for
      every rank: ranks that ran different numbers of forwards would mismatch collectives.
    ``broadcast``: the worker's rank-0 broadcast under TP. ``clock``: seconds (tests)."""
    costs = {}
    sync = torch.cuda.synchronize if str(worker.device).startswith("cuda") else (lambda: None)
    idle = 0  # batch sizes in a row at which no wider width can pay
    for b in batch_sizes(max_batch):
        costs[b] = {}
        for w in widths:
            if b * w > max_tokens and w > 1:
                costs[b][w] = float("inf")
                continue
            run = _dummy(worker, template, b, w)
            times = []
            with worker.graphs.bound(VERIFY, w):  # time what serving runs: that width's graphs
                t0 = clock()
                worker._target_worker.forward_batch_generation(run(), is_verify=True)  # warm-up
                sync()
                timed = rank0_int(1 if clock() - t0 > slow else reps, broadcast, worker.device)
                for _ in range(timed):
                    batch = run()
                    sync()
                    t0 = clock()
                    worker._target_worker.forward_batch_generation(batch, is_verify=True)
                    sync()
                    times.append(clock() - t0)
            costs[b][w] = statistics.median(times)
        costs[b] = from_rank0(costs[b], widths, broadcast, worker.device)
        idle = 0 if any(can_pay(costs[b], w) for w in widths if w > 1) else idle + 1
        if costs[b][1] > max_seconds or idle >= 2:
            break
    return costs


def can_pay(row, width: int) -> bool:
    """Whether ``width`` can beat width 1 in tokens per second at these costs ({width: s}),
    with every block of ``(width + 1) // 2`` tokens accepted (the policy's optimistic start)."""
    return row[width] < (width + 1) // 2 * row[1]


def rank0_int(value: int, broadcast, device) -> int:
    """Rank 0's ``value`` on every rank; ``value`` itself with a single rank."""
    if broadcast is None:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    sync_from_rank0([t], broadcast)
    return int(t.item())


def from_rank0(row, widths, broadcast, device):
    """Rank 0's ``row`` ({width: seconds}) on every rank (whole nanoseconds; -1 stands for
    an infinite cost); ``row`` itself with a single rank."""
    if broadcast is None:
        return row
    ns = torch.tensor([-1 if math.isinf(row[w]) else round(row[w] * 1e9) for w in widths], dtype=torch.int64,
                      device=device)
    sync_from_rank0([ns], broadcast)
    return {w: float("inf") if n < 0 else n / 1e9 for w, n in zip(widths, ns.tolist())}


def _dummy(worker, template, B: int, W: int):
    """A factory of dummy width-W forwards of B requests shaped like ``template``."""
    dev = worker.device
    n = len(template.reqs)
    pick = torch.arange(B) % n
    pick_dev = pick.to(dev)
    seq = template.seq_lens[pick_dev]
    seq_cpu = template.seq_lens_cpu[pick] if template.seq_lens_cpu is not None else None
    positions = (seq[:, None] + torch.arange(W, device=dev)[None, :]).reshape(-1)
    positions = positions.clamp(max=worker.max_position - 1)

    def make():
        b = copy.copy(template)
        b.reqs = [template.reqs[i] for i in pick.tolist()]
        b.req_pool_indices = template.req_pool_indices[pick_dev]
        if getattr(template, "req_pool_indices_cpu", None) is not None:
            b.req_pool_indices_cpu = template.req_pool_indices_cpu[pick]
        b.seq_lens, b.seq_lens_cpu = seq.clone(), None if seq_cpu is None else seq_cpu.clone()
        b.seq_lens_sum = int(seq_cpu.sum()) if seq_cpu is not None else None
        b.input_ids = torch.full((B * W,), worker.mask_id, dtype=torch.int64, device=dev)
        b.out_cache_loc = torch.zeros(B * W, dtype=torch.int64, device=dev)  # SGLang's padding slot
        b.forward_mode = ForwardMode.TARGET_VERIFY
        b.spec_info = MTPVerifyInput(positions, W)
        b.return_logprob = False
        return b

    return make
