"""A prefill of an MTP server skips SGLang's whole-batch snapshot.

For speculative algorithms SGLang wraps every forward in ``Scheduler._forward_isolation``,
which saves all of the ScheduleBatch's fields (about a hundred) and writes them back
afterwards, because a speculative decode step edits the batch mid-forward. Our prefill runs
the target's forward once, as a prefill without speculation does, and edits nothing it does
not put back itself (:func:`.prefill_masks.masked_extend` restores every field it changes).
So for EXTEND batches this AROUND hook isolates the forward the way SGLang isolates one
without speculation: nothing at all without overlap scheduling; with it, a forward-only copy
of the sampling info and the batch pinned for the forward's lifetime. That takes the
snapshot (and the copy) off every MTP server request's time to first token: about 50-100 us
on a CPU. Decode steps keep SGLang's snapshot: the worker leaves its verify inputs on the
batch.
"""

from __future__ import annotations

import contextlib

from .flags import ALGORITHM

TARGET = "sglang.srt.managers.scheduler.Scheduler._forward_isolation"


def isolation_around(original, scheduler, batch, *args, overlap: bool, **kwargs):
    """AROUND hook on ``Scheduler._forward_isolation`` (a context manager factory)."""
    if getattr(batch.spec_algorithm, "name", None) != ALGORITHM or batch.forward_mode.name != "EXTEND":
        return original(scheduler, batch, *args, overlap=overlap, **kwargs)
    if not overlap:
        return contextlib.nullcontext()
    return sampling_info_only(scheduler, batch)


@contextlib.contextmanager
def sampling_info_only(scheduler, batch):
    """Overlap scheduling: the forward runs on a forward-only copy of ``batch.sampling_info``
    (the scheduler prepares the next batch meanwhile), pinned with the batch; the
    scheduler's own object is back on the batch afterwards."""
    kept = batch.sampling_info
    if kept is not None:
        batch.sampling_info = kept.copy_for_forward()
    scheduler.record_batch_in_overlap(batch)
    try:
        yield
    finally:
        batch.sampling_info = kept
