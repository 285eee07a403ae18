"""Rank-consistent acceptance under tensor parallelism.

With TP every rank runs the same forward and its own copy of the MTP step. The logits are
all-gathered, so in exact arithmetic every rank accepts the same tokens; but a sampler
fallback or any reduction that is not bit-identical across ranks could make one rank keep a
different number of tokens, finish a request at another step, and then hang the next
collective. So rank 0 decides: the step's decision tensors (the scan's tokens and accept
lengths, sampler fallbacks' tokens, a prefill's first tokens and first blocks) are broadcast
from rank 0 before any state is written, in one int64 message per step, without a host sync.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch


def sync_from_rank0(tensors: Sequence[Optional[torch.Tensor]], broadcast: Optional[Callable]) -> None:
    """Overwrite ``tensors`` (integer tensors; None entries skipped) in place with rank 0's
    values. ``broadcast(t)`` broadcasts an int64 tensor in place from rank 0; None = one rank."""
    if broadcast is None:
        return
    present = [t for t in tensors if t is not None]
    if not present:
        return
    for t in present:
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"sync_from_rank0 carries integer decisions, got {t.dtype}")
    flat = torch.cat([t.reshape(-1).to(torch.int64) for t in present])
    broadcast(flat)
    offset = 0
    for t in present:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view(t.shape))
        offset += n


def tp_broadcast() -> Optional[Callable]:
    """Rank 0 broadcast over SGLang's tensor-parallel group, or None with a single rank."""
    try:
        from sglang.srt.distributed.parallel_state import get_tp_group

        group = get_tp_group()
    except (AssertionError, ImportError, AttributeError):  # no TP group (single process)
        return None
    if group is None or group.world_size == 1:
        return None
    return lambda t: group.broadcast(t, src=0)
