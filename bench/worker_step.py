"""The MTP worker's decode step without a model: aten ops and CPU time of its bookkeeping.

    python bench/plugin_step_profile.py --count-ops [--batch 1,8,32] [--k-max 8]

Runs the real ``MTPWorker._decode`` on fake SGLang batches (mixed conf_adapt / static /
verify / plain requests) whose forward returns prepared logits, so everything measured is
the worker's own tensor work around the forward: the number of non-view aten ops per step
(a TorchDispatchMode; on a GPU each is a kernel launch) and the median wall time per step on
one CPU thread. Steady-state steps only (the requests' first steps are behind them).
"""

from __future__ import annotations

import collections
import statistics
import time
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

V = 256
MASK = V - 1
STRATEGIES = ("conf_adapt", "static", "verify", "ntp")


class OpCounter(TorchDispatchMode):
    """Counts non-view aten ops (views launch no kernel)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


class FakeTarget:
    """The target worker: returns the step's prepared logits, does no tensor work."""

    def __init__(self):
        self.logits = None

    def forward_batch_generation(self, batch, is_verify=False):
        return SimpleNamespace(logits_output=SimpleNamespace(next_token_logits=self.logits),
                               can_run_cuda_graph=False)


def make_worker(B: int, k_max: int, seed: int = 0):
    from sglang_mtp.sglang_plugin.state import MTPState
    from sglang_mtp.sglang_plugin.worker import MTPWorker
    from sglang_mtp.strategy import Strategy
    from sglang_mtp.width import WidthPolicy

    W, P, C = 2 * k_max - 1, B + 3, 8192
    w = object.__new__(MTPWorker)  # no SGLang model runner: only what the decode step reads
    w.width, w.mask_id, w.max_position, w.device = W, MASK, C, "cpu"
    w._narrow, w.policy, w.broadcast = True, WidthPolicy(k_max), None  # fixed width, one rank
    w.calibrating, w.step_caps = False, collections.deque(maxlen=16)
    w.mask_index = torch.tensor([MASK])
    w.state = MTPState(P, W, "cpu")
    w.req_to_token_pool = SimpleNamespace(req_to_token=torch.randperm(P * C).view(P, C).int())
    w._target_worker = FakeTarget()
    gen = torch.Generator().manual_seed(seed)
    rows_host = torch.randperm(P, generator=gen)[:B].tolist()
    make = {"conf_adapt": lambda: Strategy.conf_adapt(0.9, k_max), "static": lambda: Strategy.static(k_max),
            "verify": lambda: Strategy.verify(k_max), "ntp": Strategy.ntp}
    strategies = [make[STRATEGIES[i % len(STRATEGIES)]]() for i in range(B)]
    rows = torch.tensor(rows_host)
    first = torch.randint(4, V - 1, (B,), generator=gen)
    w.state.admit(rows, rows_host, strategies, [False] * B, torch.randint(4, V - 1, (B,), generator=gen), first)
    seq = torch.randint(20, 200, (B,), generator=gen)
    batch = SimpleNamespace(req_pool_indices=rows, req_pool_indices_cpu=rows.clone(), return_logprob=False,
                            reqs=[SimpleNamespace(kv=SimpleNamespace(req_pool_idx=r)) for r in rows_host],
                            seq_lens=seq, seq_lens_cpu=seq.clone(), seq_lens_sum=int(seq.sum()),
                            forward_mode=None, input_ids=None, out_cache_loc=None, spec_info=None)
    return w, batch, gen


def step(w, batch, gen, counter=None):
    """One decode step (measured: seconds, with ``counter`` active); the next batch carries
    SGLang's new committed lengths."""
    B = batch.req_pool_indices.numel()
    # Peaked logits so ConfAdapt accepts several tokens, as a trained model would.
    w._target_worker.logits = torch.randn(B * w.width, V, generator=gen) * 6
    t = time.perf_counter()
    if counter is None:
        out = w._decode(batch, None)
    else:
        with counter:
            out = w._decode(batch, None)
    dt = time.perf_counter() - t
    batch.seq_lens = out.new_seq_lens
    batch.seq_lens_cpu = out.new_seq_lens.clone()
    return dt


def measure(B: int, k_max: int, steps: int = 200):
    """(op counts of one steady-state step, median seconds per step)."""
    torch.set_num_threads(1)
    w, batch, gen = make_worker(B, k_max)
    for _ in range(3):  # first steps behind
        step(w, batch, gen)
    counter = OpCounter()
    step(w, batch, gen, counter)
    return counter.ops, statistics.median(step(w, batch, gen) for _ in range(steps))


def report(batches, k_max: int) -> str:
    lines = ["| B | aten ops per step (non-view) | top ops | worker CPU time per step (us, 1 thread) |",
             "|---|---|---|---|"]
    for B in batches:
        ops, t = measure(B, k_max)
        top = ", ".join(f"{n.split('.')[-1]} {c}" for n, c in ops.most_common(4))
        lines.append(f"| {B} | {sum(ops.values())} | {top} | {t * 1e6:.0f} |")
    return "\n".join(lines)
