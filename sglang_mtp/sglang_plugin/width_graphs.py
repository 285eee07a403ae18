"""CUDA graphs for every width a decode step uses (GPU only; the CPU CI tests the planning).

SGLang captures one graph set at start-up: TARGET_VERIFY at the server's width
W = 2*k_max-1 (:mod:`.graphs`). With the load-adaptive width (:mod:`sglang_mtp.width`)
steps also run at 1, 3, 7, ... tokens per request, and all-plain batches run SGLang's DECODE
forward (:mod:`.plain`); without graphs of their own those would run eagerly, slower than
stock SGLang. So the worker builds, after SGLang's capture:

- one TARGET_VERIFY graph set per narrower width w, its batch sizes capped so that
  ``max_bs * w`` stays within the token budget (``--mtp-token-budget``; under ``auto`` the
  shared logits buffer's rows, since calibration comes later);
- one DECODE graph set (width 1) for all-plain batches.

Each set has its own attention backend: a backend's graph buffers and per-batch-size
wrappers are rebuilt by every capture, so two widths cannot share one. A step runs under
its set by swapping ``model_runner.decode_cuda_graph_runner`` and ``model_runner.attn_backend``
for the forward (:meth:`WidthGraphs.bound`; SGLang's UNO and adaptive EAGLE workers swap the
same pair). A batch larger than a set's largest size, or a width without a set, runs eagerly.

Before SGLang's own capture the worker caps its batch sizes too (:func:`cap_startup_sizes`):
at a budget B the full width only runs batches of at most B // W requests, so capturing more
only costs memory (graph KV-index buffers scale with max_bs * W * context, and the shared
fp32 logits buffer with max_bs * W * vocab). The cap is B / W rounded up: that capture sizes
the shared logits buffer, which must hold B rows for the narrower sets to reach B // w
(rounded down, at the CUDA default B 512 and W 15 it held 510, and 73 requests at width 7
ran eagerly).

The sets share one graph KV-index buffer (:meth:`WidthGraphs.share_kv_indices`; FlashInfer
otherwise allocates max_bs * W * context int32 per backend). Every set's memory is logged (GB, as SGLang measures its own capture) and added to the
worker's graph memory report. Building a set that fails logs a warning and leaves that width
eager: a server never fails to start over an optional speed-up.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from sglang.srt.model_executor.forward_batch_info import ForwardMode
from sglang.srt.model_executor.runner.decode_cuda_graph_runner import DecodeCudaGraphRunner

from .patching import overriding

logger = logging.getLogger(__name__)

VERIFY, DECODE = "verify", "decode"


def capped_sizes(sizes: Sequence[int], cap: int) -> List[int]:
    """The batch sizes of ``sizes`` up to ``cap``, plus ``cap`` itself when ``sizes`` goes past
    it (so the largest batch that fits still replays a graph). ``cap`` < 1 counts as 1."""
    cap = max(1, int(cap))
    kept = sorted({int(b) for b in sizes if 0 < int(b) <= cap})
    if cap < max(sizes) and cap not in kept:
        kept.append(cap)
    return kept or [1]


def plan_sets(widths: Sequence[int], full_width: int, budget: int, rows: int,
              sizes: Sequence[int], adaptive: bool) -> List[Tuple[str, int, List[int]]]:
    """The graph sets to build after SGLang's own: ``[(mode, width, batch sizes)]``, widest
    first (larger graphs first share the graph memory pool best).

    ``budget``: query tokens per forward (0 = none, e.g. ``auto``); ``rows``: rows of the shared
    logits buffer (every set's ``max_bs * width`` must fit); ``sizes``: SGLang's capture list.
    Narrower verify widths only when the width is load-adaptive; the DECODE set always."""
    limit = min(budget, rows) if budget > 0 else rows
    out = []
    if adaptive:
        for w in sorted(set(widths), reverse=True):
            if w != full_width:
                out.append((VERIFY, w, capped_sizes(sizes, limit // w)))
    out.append((DECODE, 1, capped_sizes(sizes, limit)))
    return out


def startup_cap(budget: int, full_width: int) -> Optional[int]:
    """The largest batch SGLang's full-width capture takes at a fixed ``budget`` (None: no
    cap): ``budget / full_width`` rounded up, so the logits buffer it sizes holds the budget."""
    return max(1, -(-budget // full_width)) if budget > 0 else None


def cap_startup_sizes(cap: Optional[int]) -> Optional[List[int]]:
    """Cap SGLang's decode capture list before it captures (returns the original list, None
    when there is nothing to cap or no graph config)."""
    cfg = graph_config()
    if cap is None or cfg is None or not cfg.decode.bs:
        return None
    original = list(cfg.decode.bs)
    cfg.decode.bs = capped_sizes(original, cap)
    logger.info("MTP: full-width graphs for batch sizes up to %d (token budget)", max(cfg.decode.bs))
    return original


def graph_config():
    try:
        from sglang.srt.runtime_context import get_exec

        return get_exec().graph.cuda_graph_config
    except Exception:  # no graph config in this process (CPU, graphs disabled)
        return None


@contextlib.contextmanager
def _capture_sizes(sizes):
    """SGLang's capture list set to ``sizes`` for one runner, without torch.compile (with
    ``--enable-torch-compile`` every extra width would compile every batch size again)."""
    from sglang.srt.runtime_context import get_exec

    cfg = graph_config()
    saved = list(cfg.decode.bs)
    cfg.decode.bs = list(sizes)
    graph = get_exec().graph
    no_compile = graph.override(torch_compile_max_bs=0) if "torch_compile_max_bs" in graph else contextlib.nullcontext()
    try:
        with no_compile:
            yield
    finally:
        cfg.decode.bs = saved


class WidthGraphs:
    """The graph sets of one model runner, keyed by (mode, width)."""

    def __init__(self, model_runner):
        self.model_runner = model_runner
        self.sets: Dict[Tuple[str, int], tuple] = {}  # (mode, width) -> (graph runner, attention backend)
        self.memory_gb: Dict[Tuple[str, int], float] = {}
        self._kv_indices = None  # graph KV-index buffer shared by the sets (share_kv_indices)
        self._custom_mask = None  # and their custom-mask buffer, which an MTP verify never reads
        self._base = None  # SGLang's own runner when the sets were built

    @contextlib.contextmanager
    def bound(self, mode: str, width: int):
        """Run the forward inside under the (mode, width) set, when there is one."""
        entry = self.sets.get((mode, width))
        mr = self.model_runner
        if entry is not None and mr.decode_cuda_graph_runner is not self._base:
            # SGLang captured its graphs again (a weight update with recapture): the sets were
            # captured against the old runner's buffers, so from now on every width but SGLang's
            # runs eagerly.
            logger.warning("MTP: SGLang recaptured its CUDA graphs; the %d extra graph sets are dropped and "
                           "their widths run eagerly", len(self.sets))
            self.sets.clear()
            entry = None
        if entry is None:  # SGLang's own width (its runner as it is now), or no set: eager
            yield
            return
        with overriding(mr, "decode_cuda_graph_runner", entry[0]), overriding(mr, "attn_backend", entry[1]):
            yield

    def build(self, plan, full_width: int, memory_report: dict) -> None:
        """Capture the sets of ``plan`` (:func:`plan_sets`); ``memory_report``: the worker's
        ``_additional_graph_memory_usage``."""
        from sglang.srt.utils import get_available_gpu_memory

        mr = self.model_runner
        base = mr.decode_cuda_graph_runner
        if not isinstance(base, DecodeCudaGraphRunner):
            logger.info("MTP: no decode CUDA graphs in this server; narrower widths run eagerly")
            return
        self._base = base  # SGLang's full width is its own runner's, looked up at each step
        reason = extras_unsupported(mr, base)
        if reason:
            logger.info("MTP: no graph sets besides SGLang's (%s); narrower widths and plain batches run eagerly",
                        reason)
            return
        tokens = max(max(bs) * width for _, width, bs in plan) if plan else 0
        for mode, width, bs in plan:
            before, tic = get_available_gpu_memory(mr.device, mr.gpu_id), time.perf_counter()
            try:
                backend = self._new_backend(width)
                self.share_kv_indices(backend, tokens)
                with _capture_sizes(bs), overriding(mr, "attn_backend", backend):
                    cls = PlainDecodeRunner if mode == DECODE else DecodeCudaGraphRunner
                    runner = cls(mr, attn_backend=backend, speculative_num_draft_tokens=width)
            except Exception as e:  # keep serving: this width runs eagerly
                if _tp_size() > 1:  # other ranks may have captured it: their collectives would pair up wrong
                    raise RuntimeError(f"MTP: {mode} graphs at width {width} failed on this rank under tensor "
                                       f"parallelism ({type(e).__name__}: {e}); start the server with "
                                       "--mtp-token-budget 0 or --disable-cuda-graph") from e
                logger.warning("MTP: %s graphs at width %d failed (%s: %s); that width runs eagerly",
                               mode, width, type(e).__name__, e)
                continue
            gb = before - get_available_gpu_memory(mr.device, mr.gpu_id)
            self.sets[(mode, width)] = (runner, backend)
            self.memory_gb[(mode, width)] = gb
            key = "decode" if mode == DECODE else "target_verify"
            memory_report[key] = memory_report.get(key, 0.0) + gb
            logger.info("MTP graphs %s width %d: batch sizes %s, %.2f GB, %.1f s", mode, width,
                        _sizes_text(bs), gb, time.perf_counter() - tic)

    def _new_backend(self, width: int):
        """A fresh attention backend like the runner's own, sharing its float workspace."""
        from sglang.srt.runtime_context import get_spec

        mr = self.model_runner
        saved = getattr(mr, "init_new_workspace", None)
        try:
            with get_spec().override(speculative_num_draft_tokens=width):
                backend = mr._get_attention_backend(init_new_workspace=False)
        finally:
            if saved is not None:
                mr.init_new_workspace = saved
        for name in ("prefill_attention_backend_str", "decode_attention_backend_str"):
            if hasattr(mr.attn_backend, name):
                setattr(backend, name, getattr(mr.attn_backend, name))
        translator = getattr(mr, "kv_index_translator", None)
        if translator is not None and hasattr(translator, "bind_and_verify_backends"):
            translator.bind_and_verify_backends([backend])
        return backend

    def share_kv_indices(self, backend, tokens: int) -> None:
        """Let ``backend``'s graph state use one KV-index buffer shared by every set (FlashInfer
        sizes it max_num_tokens x context per backend). Replays run one at a time and each
        plans its indices right before it replays, so one buffer serves them all. The same
        holds for FlashInfer's custom-mask buffer (max_num_tokens x context bytes per backend),
        which an MTP verify never even reads: its input is causal and carries no mask."""
        original = getattr(backend, "init_cuda_graph_state", None)
        context = getattr(backend, "max_context_len", None)
        if original is None or context is None or "kv_indices_buf" not in inspect.signature(original).parameters:
            return

        def init_cuda_graph_state(max_bs, max_num_tokens, kv_indices_buf=None):
            if kv_indices_buf is None and max_num_tokens <= tokens:
                if self._kv_indices is None:
                    self._kv_indices = torch.zeros(tokens * context, dtype=torch.int32, device="cuda")
                kv_indices_buf = self._kv_indices[:max_num_tokens * context]
            out = original(max_bs, max_num_tokens, kv_indices_buf=kv_indices_buf)
            if isinstance(getattr(backend, "cuda_graph_custom_mask", None), torch.Tensor) and max_num_tokens <= tokens:
                if self._custom_mask is None:
                    self._custom_mask = torch.zeros(tokens * context, dtype=torch.uint8, device="cuda")
                backend.cuda_graph_custom_mask = self._custom_mask[:max_num_tokens * context]  # its own is freed
            return out

        backend.init_cuda_graph_state = init_cuda_graph_state

    def describe(self) -> str:
        return ", ".join(f"{m} w{w}: {gb:.2f} GB" for (m, w), gb in sorted(self.memory_gb.items())) or "none"


def _tp_size() -> int:
    try:
        from sglang.srt.runtime_context import get_parallel

        return int(get_parallel().tp_size)
    except Exception:  # no parallel state in this process (unit tests)
        return 1


def extras_unsupported(model_runner, base_runner) -> Optional[str]:
    """Why the extra graph sets cannot be built next to SGLang's, or None. Each of these keeps
    process-wide graph state that a second runner would overwrite (LoRA's batch info, the
    PD-multiplexing backend group) or splits batches in ways a second capture list would not
    follow (two-batch overlap, data-parallel attention's gathered buffers)."""
    if getattr(model_runner, "lora_manager", None) is not None:
        return "LoRA"
    for flag, name in (("enable_pdmux", "PD multiplexing"), ("enable_two_batch_overlap", "two-batch overlap"),
                       ("require_mlp_sync", "data-parallel attention")):
        if getattr(base_runner, flag, False):
            return name
    return None


def _sizes_text(bs) -> str:
    return f"{bs[0]}..{bs[-1]} ({len(bs)})" if len(bs) > 3 else str(bs)


class PlainDecodeRunner(DecodeCudaGraphRunner):
    """SGLang's decode graph runner pinned to ForwardMode.DECODE (SGLang switches every runner
    of a speculative server to TARGET_VERIFY): the graphs of all-plain batches."""

    capture_forward_mode = property(lambda self: ForwardMode.DECODE, lambda self, value: None)
