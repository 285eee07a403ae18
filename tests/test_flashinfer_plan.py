"""FlashInfer planning of the MTP verify forward (sglang_mtp/sglang_plugin/flashinfer_plan.py):
which captured graphs replay with SGLang's sync-free plan, and the host lengths and window
offsets it is handed. The replays themselves need a GPU (README, "Only checkable on a GPU")."""

import functools
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("sglang")

from sglang.srt.model_executor.forward_batch_info import ForwardMode  # noqa: E402

from sglang_mtp.sglang_plugin import flashinfer_plan as fp  # noqa: E402
from sglang_mtp.sglang_plugin.spec_input import MTPVerifyInput  # noqa: E402


def backend(**over):
    wrappers = [SimpleNamespace(begin_forward="plan"), SimpleNamespace(begin_forward="plan")]
    b = dict(prefill_backend="fa2", dispatch_reason=None, flashinfer_kv_cache_dtype=torch.bfloat16,
             prefill_cuda_graph_metadata={4: wrappers})
    b.update(over)
    return SimpleNamespace(**b)


def verify_batch(spec=None, mode=ForwardMode.TARGET_VERIFY):
    return SimpleNamespace(forward_mode=mode, batch_size=4, spec_info=spec or MTPVerifyInput(None, 3, device="cpu"))


def test_fast_plan_for_plain_mtp_verify_graphs_only():
    assert fp.fast_plan_applies(backend(), verify_batch())
    masked = MTPVerifyInput(None, 3, device="cpu")
    masked.custom_mask = torch.ones(1)
    assert not fp.fast_plan_applies(backend(), verify_batch(masked))
    assert not fp.fast_plan_applies(backend(dispatch_reason="sliding window"), verify_batch())
    assert not fp.fast_plan_applies(backend(flashinfer_kv_cache_dtype=torch.float32), verify_batch())
    assert not fp.fast_plan_applies(backend(prefill_backend="trtllm"), verify_batch())
    assert not fp.fast_plan_applies(backend(), verify_batch(mode=ForwardMode.DECODE))
    other = SimpleNamespace(custom_mask=None, num_tokens_per_req=3)  # another algorithm's verify input
    assert not fp.fast_plan_applies(backend(), verify_batch(other))


def test_capture_installs_the_sync_free_plan():
    from sglang.srt.layers.attention.flashinfer_backend import fast_prefill_plan

    b = backend()
    assert fp.install_fast_plan("out", b, verify_batch(), in_capture=False) == "out"
    assert all(w.begin_forward == "plan" for w in b.prefill_cuda_graph_metadata[4])  # replays keep plan()
    fp.install_fast_plan(None, b, verify_batch(), True)
    for w in b.prefill_cuda_graph_metadata[4]:
        assert isinstance(w.begin_forward, functools.partial) and w.begin_forward.func is fast_prefill_plan
        assert w.begin_forward.args == (w,)
    b = backend(dispatch_reason="sliding window")
    fp.install_fast_plan(None, b, verify_batch(), True)
    assert all(w.begin_forward == "plan" for w in b.prefill_cuda_graph_metadata[4])


def _args(spec, kv_start):
    args = [None] * 12
    args[fp.SPEC_INFO_ARG], args[fp.KV_START_ARG] = spec, kv_start
    return args


def test_plan_gets_host_kv_lengths_and_window_offsets_of_mtp_forwards():
    seen = {}

    def original(updater, *args, **kwargs):
        spec = args[fp.SPEC_INFO_ARG]
        seen.update(seq_lens_cpu=kwargs.get("seq_lens_cpu"), start=getattr(spec, "kv_start_idx", None))
        return "planned"

    spec = MTPVerifyInput(None, 3, device="cpu")
    start = torch.tensor([0, 5])
    out = fp.verify_lengths(original, None, *_args(spec, start), seq_lens_cpu=torch.tensor([10, 20]))
    assert out == "planned"
    assert seen["seq_lens_cpu"].tolist() == [13, 23]  # committed KV + the W query tokens
    assert seen["start"] is start and spec.kv_start_idx is None  # only during the call
    other = SimpleNamespace(num_tokens_per_req=3)
    fp.verify_lengths(original, None, *_args(other, start), seq_lens_cpu=torch.tensor([10, 20]))
    assert seen["seq_lens_cpu"].tolist() == [10, 20]  # other algorithms untouched


def test_window_offsets_reach_the_kv_index_packing():
    calls = []
    translator = SimpleNamespace(pack_read_stream=lambda plan, **kw: calls.append(kw))
    spec = MTPVerifyInput(None, 2, device="cpu")
    lens = torch.tensor([4, 6], dtype=torch.int32)
    _, indptr, qo, mask = spec.generate_attn_arg_prefill(req_pool_indices=torch.tensor([1, 2]), paged_kernel_lens=lens,
                                                         paged_kernel_lens_sum=10, translator=translator, plan=None)
    assert indptr.tolist() == [0, 6, 14] and qo.tolist() == [0, 2, 4] and mask is None
    assert "kv_start_idx" not in calls[-1]
    spec.kv_start_idx = torch.tensor([3, 0])
    spec.generate_attn_arg_prefill(req_pool_indices=torch.tensor([1, 2]), paged_kernel_lens=lens,
                                   paged_kernel_lens_sum=10, translator=translator, plan=None)
    assert calls[-1]["kv_start_idx"].tolist() == [3, 0]
