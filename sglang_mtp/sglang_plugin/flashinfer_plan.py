"""FlashInfer planning of the MTP verify forward (GPU only; the CPU CI tests the decisions).

Without this, every replayed MTP verify graph on FlashInfer plans through ``plan()``, which
copies qo_indptr, kv_indptr and the last-page lengths from the device to the host: three
blocking copies per decode step, so the host cannot run ahead of the GPU. SGLang installs a
sync-free plan (``fast_prefill_plan``: the same plan from host-known lengths) only for its own
DFlash and EAGLE verify inputs; MTP knows its lengths on the host too (committed KV + W, the
worker keeps ``seq_lens_cpu`` equal to the committed KV it attends to), so:

- :func:`install_fast_plan` (AFTER ``init_forward_metadata_out_graph``): when an MTP verify
  graph is captured on a plain full-attention fa2 backend with an fp16/bf16/fp8 KV cache, its
  wrappers replay with the sync-free plan;
- :func:`verify_lengths` (AROUND the prefill updater's ``call_begin_forward``): hands the plan
  the host KV lengths of an MTP verify forward (``seq_lens_cpu + W``, the lengths
  ``MTPVerifyInput.generate_attn_arg_prefill`` packs on the device), and the sliding-window
  wrapper's start offsets, which SGLang passes only to DFlash: without them a window layer
  would read the first tokens of a long sequence instead of its last ones.

Eager forwards (a batch larger than its width's graphs) keep ``plan()``: SGLang's sync-free
plan only exists for graph replays.
"""

from __future__ import annotations

import functools

import torch

from .spec_input import MTPVerifyInput

_BACKEND = "sglang.srt.layers.attention.flashinfer_backend"
TARGETS = {
    "install": _BACKEND + ".FlashInferAttnBackend.init_forward_metadata_out_graph",
    "lengths": _BACKEND + ".FlashInferIndicesUpdaterPrefill.call_begin_forward",
}
FAST_PLAN_KV_DTYPES = (torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2)
# Positions of call_begin_forward's arguments after ``self`` (SGLang 0.5.23).
KV_START_ARG, SPEC_INFO_ARG = 7, 11


def fast_plan_applies(backend, forward_batch) -> bool:
    """Whether an MTP verify graph captured for ``forward_batch`` can replay sync-free."""
    spec = forward_batch.spec_info
    return (forward_batch.forward_mode.is_target_verify() and isinstance(spec, MTPVerifyInput)
            and spec.custom_mask is None and getattr(backend, "prefill_backend", None) == "fa2"
            and getattr(backend, "dispatch_reason", "unknown") is None  # no sliding window / cross attention
            and getattr(backend, "flashinfer_kv_cache_dtype", None) in FAST_PLAN_KV_DTYPES)


def install_fast_plan(result, backend, forward_batch, in_capture=False, *args, **kwargs):
    """AFTER hook: the capture has planned once with ``plan()``; replays plan sync-free."""
    if in_capture and fast_plan_applies(backend, forward_batch):
        from sglang.srt.layers.attention.flashinfer_backend import fast_prefill_plan

        for wrapper in backend.prefill_cuda_graph_metadata[forward_batch.batch_size]:
            wrapper.begin_forward = functools.partial(fast_prefill_plan, wrapper)
    return result


def verify_lengths(original, updater, *args, **kwargs):
    """AROUND hook: an MTP verify forward's host KV lengths and window start offsets."""
    spec = _arg(args, kwargs, SPEC_INFO_ARG, "spec_info")
    if not isinstance(spec, MTPVerifyInput):
        return original(updater, *args, **kwargs)
    if kwargs.get("seq_lens_cpu") is not None:  # read only by the sync-free plan
        kwargs["seq_lens_cpu"] = kwargs["seq_lens_cpu"] + spec.num_tokens_per_req
    spec.kv_start_idx = _arg(args, kwargs, KV_START_ARG, "kv_start_idx")
    try:
        return original(updater, *args, **kwargs)
    finally:
        spec.kv_start_idx = None


def _arg(args, kwargs, position: int, name: str):
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def register() -> list:
    """Register the hooks; none where this SGLang has no FlashInfer backend to plan."""
    try:
        import sglang.srt.layers.attention.flashinfer_backend  # noqa: F401
    except Exception:  # FlashInfer missing from this install: nothing to plan
        return []
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGETS["install"], install_fast_plan, HookType.AFTER)
    HookRegistry.register(TARGETS["lengths"], verify_lengths, HookType.AROUND)
    return list(TARGETS.values())
