"""Compatibility hooks that let a stock SGLang 0.5.23 Engine run the MTP worker on a CPU.

Applied only when no CUDA device is present (the CI machines), except the torch_native
TARGET_VERIFY attention (:mod:`.verify_attention`), applied wherever that backend is used. Each hook
says why it exists. None of them changes results: they replace Triton/CUDA-only helpers
with plain-torch equivalents, skip a GPU-only warm-up, or skip the profiler range of a
device-to-host copy that has nothing to copy.
"""

from __future__ import annotations

import sys
import types

import torch
from sglang.srt.plugins.hook_registry import HookRegistry, HookType

TARGETS = {
    "kv_copy": "sglang.srt.mem_cache.memory_pool.MHATokenToKVPool._init_kv_copy_and_warmup",
    "assign": "sglang.srt.mem_cache.allocation.assign_req_to_token_pool_func",
    "verify_attn": "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend.forward_extend",
    "tp_group": "sglang.srt.distributed.parallel_state.GroupCoordinator.__init__",
    "result_copy": "sglang.srt.managers.utils.GenerationBatchResult.copy_to_cpu",
}
# GroupCoordinator's device communicators: CUDA-only (NCCL, custom all-reduce, ...).
GPU_COMMUNICATORS = ("use_pynccl", "use_mscclpp", "use_custom_allreduce", "use_torch_symm_mem_all_reduce")


def on_cpu() -> bool:
    return not torch.cuda.is_available()


def register() -> list:
    """Register the hooks for this machine; returns the hook targets to verify later."""
    targets = [TARGETS["verify_attn"]]
    HookRegistry.register(TARGETS["verify_attn"], _verify_attention_around, HookType.AROUND)
    if not on_cpu():
        return targets
    _stub_vllm_custom_ops()
    HookRegistry.register(TARGETS["kv_copy"], _skip_kv_copy_warmup, HookType.REPLACE)
    HookRegistry.register(TARGETS["assign"], _assign_req_to_token_pool_torch, HookType.REPLACE)
    HookRegistry.register(TARGETS["tp_group"], _gloo_group_without_gpu_communicators, HookType.AROUND)
    HookRegistry.register(TARGETS["result_copy"], _result_already_on_host, HookType.AROUND)
    return targets + [TARGETS["kv_copy"], TARGETS["assign"], TARGETS["tp_group"], TARGETS["result_copy"]]


def _stub_vllm_custom_ops() -> None:
    # Why: on a non-CUDA device RotaryEmbedding.__init__ imports
    # `vllm._custom_ops.rotary_embedding` as a fallback kernel that the CPU path never calls
    # (the native rope runs instead); without vllm installed the import kills model loading.
    if "vllm._custom_ops" in sys.modules:
        return
    try:
        import vllm._custom_ops  # noqa: F401  (a real vllm wins)
        return
    except ImportError:
        pass

    def rotary_embedding(*args, **kwargs):
        raise RuntimeError("sglang-mtp CPU shim: vllm rotary_embedding stub must not be called")

    pkg = sys.modules.get("vllm") or types.ModuleType("vllm")
    ops = types.ModuleType("vllm._custom_ops")
    ops.rotary_embedding = rotary_embedding
    pkg._custom_ops = ops
    sys.modules.setdefault("vllm", pkg)
    sys.modules["vllm._custom_ops"] = ops


def _skip_kv_copy_warmup(self):
    # Why: with any speculative algorithm the KV pool warms up a Triton KV-copy kernel,
    # which fails without a GPU driver ("0 active drivers"). MTP never moves KV slots
    # (kept tokens are written in place), so the copy config is not needed.
    self._kv_copy_config = None


def _assign_req_to_token_pool_torch(req_pool_indices, req_to_token, start_offset, end_offset,
                                    out_cache_loc, batch_size):
    # Why: the scheduler reserves decode slots for every speculative algorithm through this
    # Triton kernel (no driver on CPU); the CPU kernel it would use instead needs a CPU
    # build of sgl_kernel that PyPI does not ship. Same semantics in plain torch:
    # req_to_token[req_pool_indices[i], start[i]:end[i]] = the next out_cache_loc slots.
    starts, ends = start_offset.tolist(), end_offset.tolist()
    rows = req_pool_indices.tolist()
    offset = 0
    for row, s, e in zip(rows[:batch_size], starts, ends):
        n = e - s
        req_to_token[row, s:e] = out_cache_loc[offset:offset + n].to(req_to_token.dtype)
        offset += n


def _gloo_group_without_gpu_communicators(original, self, *args, **kwargs):
    # Why: with --tp N on a CPU SGLang (without its CPU engine, whose sgl_kernel build PyPI
    # does not ship) builds the tensor-parallel group with a PyNccl communicator, which
    # fails with "Expected a cuda device, but got: cpu". Without the GPU communicators the
    # group's collectives run on its gloo process group. Lets the MTP worker's rank-0
    # broadcast be tested on two CPU ranks (tests/sglang/test_engine_tp.py).
    if str(kwargs.get("torch_distributed_backend", "")) == "gloo":
        kwargs.update({name: False for name in GPU_COMMUNICATORS if name in kwargs})
    return original(self, *args, **kwargs)


def _result_already_on_host(original, self, return_logprob, return_hidden_states=True):
    # Why: without a GPU a forward's results are host tensors already, so SGLang's
    # GenerationBatchResult.copy_to_cpu copies nothing (its async_d2h hands host tensors
    # back as they are). What it does cost is its profiler range: the first
    # torch.profiler.record_function after a forward takes 60-90 us on these CPUs, and
    # every speculative step calls copy_to_cpu (plain decoding without overlap calls none),
    # so an MTP server paid it on each request's time to first token. This keeps the two
    # effects that remain on the host (auxiliary outputs, the copy_done event) and skips
    # the range; a result holding any device tensor takes SGLang's copy.
    if not _all_on_host(self, return_logprob, return_hidden_states):
        return original(self, return_logprob, return_hidden_states)
    self.copy_auxiliary_output_to_cpu()
    self.copy_done.record()


def _all_on_host(result, return_logprob, return_hidden_states) -> bool:
    out = result.logits_output
    if not _on_host(result.next_token_ids):
        return False
    tensors = [result.accept_lens, result.block_accept_lens, result.cap_lens]
    if out is not None and return_hidden_states:
        tensors.append(out.hidden_states)
    if return_logprob or any(h is not None for h in (
            getattr(out, "sampling_mask_output", None), result.routed_experts_output,
            result.indexer_topk_output, result.expert_distribution_metrics)):
        return False  # lists of tensors and holders: SGLang's own walk over them
    return all(t is None or _on_host(t) for t in tensors)


def _on_host(t) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "cpu"


def _verify_attention_around(original, self, q, k, v, layer, forward_batch, save_kv_cache=True):
    # Why: torch_native runs a TARGET_VERIFY batch through its prefill path, which needs
    # extend_prefix_lens / extend_seq_lens (SGLang fills them only for prefill batches) and
    # pads every request's W queries to its whole KV length, one SDPA call per request.
    # Plain causal layers take verify_attention instead: one SDPA call for the batch, W
    # query rows per request. Other layers (sliding window, cross attention) keep the
    # prefill path with the lengths filled in for the call.
    fb = forward_batch
    if not fb.forward_mode.is_target_verify():
        return original(self, q, k, v, layer, fb, save_kv_cache)
    width = fb.spec_info.num_tokens_per_req
    if _plain_causal(layer):
        return _batched_verify(self, q, k, v, layer, fb, save_kv_cache, width)
    saved = (fb.seq_lens, fb.extend_prefix_lens, fb.extend_seq_lens)
    fb.extend_prefix_lens = fb.seq_lens
    fb.extend_seq_lens = torch.full_like(fb.seq_lens, width)
    fb.seq_lens = fb.seq_lens + width
    try:
        return original(self, q, k, v, layer, fb, save_kv_cache)
    finally:
        fb.seq_lens, fb.extend_prefix_lens, fb.extend_seq_lens = saved


def _plain_causal(layer) -> bool:
    from sglang.srt.layers.radix_attention import AttentionType

    window = getattr(layer, "sliding_window_size", None)
    return (not layer.is_cross_attention and layer.attn_type != AttentionType.ENCODER_ONLY
            and (window is None or window <= -1))


def _batched_verify(backend, q, k, v, layer, fb, save_kv_cache, width):
    from sglang.srt.mem_cache.memory_pool import KVWriteLoc

    from .verify_attention import verify_attention, verify_plan

    pool = backend.token_to_kv_pool
    if save_kv_cache and k is not None and v is not None:
        pool.set_kv_buffer(layer, KVWriteLoc(fb.out_cache_loc, backend.swa_out_cache_loc), k, v)
    plan = getattr(fb, "_mtp_verify_plan", None)  # built by the first layer, shared by all
    if plan is None:
        plan = verify_plan(backend.req_to_token_pool.req_to_token, fb.req_pool_indices, fb.seq_lens, width)
        fb._mtp_verify_plan = plan
    q_ = q.view(-1, layer.tp_q_head_num, layer.qk_head_dim)
    o = verify_attention(q_, pool.get_key_buffer(layer.layer_id), pool.get_value_buffer(layer.layer_id), plan,
                         layer.scaling)
    return o.reshape(q.shape[0], layer.tp_q_head_num * layer.v_head_dim)
