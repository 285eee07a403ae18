"""Prefills of an MTP server skip SGLang's whole-batch snapshot (sglang_plugin/isolation.py):
only the sampling-info copy (and the overlap pin) of a batch without speculation remain, and
everything else keeps SGLang's own isolation."""

import contextlib
import inspect
from types import SimpleNamespace

import pytest

pytest.importorskip("sglang")

from sglang.srt.managers.scheduler import Scheduler  # noqa: E402
from sglang.srt.model_executor.forward_batch_info import ForwardMode  # noqa: E402

from sglang_mtp.sglang_plugin import isolation  # noqa: E402
from sglang_mtp.sglang_plugin.flags import ALGORITHM  # noqa: E402


class Info:
    def __init__(self, forward_only=False):
        self.forward_only = forward_only

    def copy_for_forward(self):
        return Info(forward_only=True)


class FakeScheduler:
    def __init__(self):
        self.pinned = []

    def record_batch_in_overlap(self, batch):
        self.pinned.append(batch.sampling_info)


def original_isolation(calls):
    @contextlib.contextmanager
    def original(scheduler, batch, *, overlap):
        calls.append((batch.forward_mode, overlap))
        yield
    return original


def batch(mode, algorithm=ALGORITHM):
    return SimpleNamespace(spec_algorithm=SimpleNamespace(name=algorithm), forward_mode=mode, sampling_info=Info(),
                           input_ids="prompt")


@pytest.mark.parametrize("overlap", [False, True])
def test_mtp_prefill_is_isolated_like_a_prefill_without_speculation(overlap):
    calls, sched, b = [], FakeScheduler(), batch(ForwardMode.EXTEND)
    info = b.sampling_info
    with isolation.isolation_around(original_isolation(calls), sched, b, overlap=overlap):
        # overlap: the forward's own copy of the sampling info; without: the batch's own
        assert b.sampling_info.forward_only if overlap else b.sampling_info is info
        b.input_ids = "prompt + masks"  # the worker's edits are not undone by a snapshot...
    assert b.sampling_info is info and not calls
    assert b.input_ids == "prompt + masks"  # ...(masked_extend restores its own, tests/test_prefill_masks.py)
    assert [p.forward_only for p in sched.pinned] == ([True] if overlap else [])  # the copy is what is pinned


@pytest.mark.parametrize("mode,algorithm", [(ForwardMode.DECODE, ALGORITHM), (ForwardMode.MIXED, ALGORITHM),
                                            (ForwardMode.EXTEND, "EAGLE")])
def test_decode_steps_and_other_algorithms_keep_sglangs_isolation(mode, algorithm):
    calls, b = [], batch(mode, algorithm)
    with isolation.isolation_around(original_isolation(calls), FakeScheduler(), b, overlap=True):
        pass
    assert calls == [(mode, True)]


def test_the_hooked_method_has_the_shape_the_hook_expects():
    params = inspect.signature(Scheduler._forward_isolation).parameters
    assert list(params)[:2] == ["self", "batch"] and params["overlap"].kind is inspect.Parameter.KEYWORD_ONLY
    assert hasattr(Scheduler, "record_batch_in_overlap")
