"""CUDA-graph capture of the MTP forwards (GPU only; the CPU CI tests the hooks' decisions).

For any speculative algorithm SGLang captures the target's decode graphs in TARGET_VERIFY
mode with ``speculative_num_draft_tokens`` (= W) tokens per request, but it builds the dummy
``SpecInput`` only for its builtin algorithms (plugin algorithms get None). These hooks hand
it an :class:`MTPVerifyInput`, so one graph per batch size serves every mix of per-request k
and tau; the worker's other widths and its plain DECODE steps get graph sets of their own
(:mod:`.width_graphs`). Applied on every device; on CPU (graphs disabled) they never run.
"""

from __future__ import annotations

from sglang.srt.model_executor.forward_batch_info import ForwardMode

from .flags import ALGORITHM
from .spec_input import MTPVerifyInput

TARGETS = {
    "dummy": "sglang.srt.speculative.spec_info.create_dummy_verify_input",
    "runner": "sglang.srt.model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.get_spec_info",
    "can_run": "sglang.srt.model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.can_run_graph",
}


def _is_mtp(algorithm) -> bool:
    return getattr(algorithm, "name", None) == ALGORITHM


def dummy_verify_input(original, spec_algorithm, custom_mask, num_tokens_per_req, is_draft_worker):
    """AROUND hook: the capture-time verify input of the base graph runner."""
    if not _is_mtp(spec_algorithm):
        return original(spec_algorithm, custom_mask, num_tokens_per_req, is_draft_worker)
    device = custom_mask.device if custom_mask is not None else None
    return MTPVerifyInput(None, num_tokens_per_req, device=device)


def runner_spec_info(result, runner, num_tokens, *args, **kwargs):
    """AFTER hook: the decode graph runner's capture-time verify input (none for the worker's
    plain DECODE runner, :mod:`.width_graphs`)."""
    if (result is not None or not _is_mtp(runner.model_runner.spec_algorithm)
            or runner.capture_forward_mode != ForwardMode.TARGET_VERIFY):
        return result
    return MTPVerifyInput(None, runner.speculative_num_draft_tokens, device=runner.model_runner.device)


def same_mode_only(result, runner, forward_batch, *args, **kwargs):
    """AFTER hook: a graph replays only a forward of the mode it was captured in (SGLang
    checks the width, not the mode): the worker's plain DECODE steps never replay the
    TARGET_VERIFY graphs, nor verify steps the DECODE graphs."""
    if result and _is_mtp(runner.model_runner.spec_algorithm) and forward_batch.forward_mode != runner.capture_forward_mode:
        return False
    return result


def register() -> list:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGETS["dummy"], dummy_verify_input, HookType.AROUND)
    HookRegistry.register(TARGETS["runner"], runner_spec_info, HookType.AFTER)
    HookRegistry.register(TARGETS["can_run"], same_mode_only, HookType.AFTER)
    return list(TARGETS.values())
