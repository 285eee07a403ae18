"""The two ``SpecInput`` objects the MTP worker hands to SGLang.

``MTPVerifyInput`` describes one W-wide forward (``ForwardMode.TARGET_VERIFY``): W query
tokens per request at consecutive positions after the committed KV, plain causal
attention. ``SpecInputType`` is a closed enum, so it reuses ``NGRAM_VERIFY``, whose
attention-backend branch is the generic "W tokens per request" one.

``MTPRelay`` is what the scheduler carries between rounds (``next_draft_input``). All MTP
state lives in the worker (:mod:`.state`); the relay only satisfies the scheduler's
filter/merge and overlap FutureMap protocol (one ``bonus_tokens`` entry per request).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
from sglang.srt.speculative.spec_info import SpecInput, SpecInputType


class MTPVerifyInput(SpecInput):
    """One W-wide causal forward: ``positions`` [B * W] int64 (None in graph capture,
    where the runner's static buffers hold them)."""

    def __init__(self, positions: Optional[torch.Tensor], width: int, device=None):
        super().__init__(SpecInputType.NGRAM_VERIFY)
        self.positions = positions
        self.draft_token_num = width
        self.num_tokens_per_req = width
        self.num_tokens_for_logprob_per_req = width
        self.custom_mask = None  # causal: MTP's mask rows only look left
        self.capture_hidden_mode = CaptureHiddenMode.NULL
        self.device = positions.device if positions is not None else device
        self.kv_start_idx = None  # a sliding-window wrapper's first KV position (flashinfer_plan.py)

    def generate_attn_arg_prefill(self, *, req_pool_indices, paged_kernel_lens, paged_kernel_lens_sum,
                                  translator, plan, kind=None, **kwargs):
        """CSR KV indices for the committed KV plus the W new tokens (GPU backends); a
        sliding-window wrapper's reads start at ``kv_start_idx`` (see flashinfer_plan.py)."""
        bs = req_pool_indices.numel()
        width = self.draft_token_num
        kv_lens = paged_kernel_lens + width
        kv_indptr = torch.zeros((bs + 1,), dtype=torch.int32, device=self.device)
        kv_indptr[1:] = torch.cumsum(kv_lens, dim=0)
        qo_indptr = torch.arange(0, bs + 1, dtype=torch.int32, device=self.device) * width
        kv_indices = torch.empty(paged_kernel_lens_sum + width * bs, dtype=torch.int32, device=self.device)
        extra = {} if kind is None else {"kind": kind}
        if self.kv_start_idx is not None:
            extra["kv_start_idx"] = self.kv_start_idx
        translator.pack_read_stream(plan, req_pool_indices=req_pool_indices, seq_lens=kv_lens,
                                    indptr=kv_indptr, out=kv_indices, **extra)
        return kv_indices, kv_indptr, qo_indptr, None


class MTPRelay(SpecInput):
    """Between-round carrier: ``bonus_tokens`` [B] (the last emitted token, for the FutureMap)."""

    def __init__(self, bonus_tokens: Optional[torch.Tensor] = None,
                 new_seq_lens: Optional[torch.Tensor] = None,
                 future_indices: Optional[torch.Tensor] = None):
        super().__init__(SpecInputType.NGRAM_VERIFY)
        self.bonus_tokens = bonus_tokens
        self.new_seq_lens = new_seq_lens
        self.future_indices = future_indices
        self.topk_p = None
        self.topk_index = None
        self.hidden_states = None

    def filter_batch(self, new_indices: torch.Tensor, new_indices_cpu: Optional[List[int]] = None):
        if self.future_indices is not None:
            self.future_indices = self.future_indices[new_indices]
            return
        for name in ("bonus_tokens", "new_seq_lens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[new_indices])

    def merge_batch(self, other: "MTPRelay"):
        if self.future_indices is not None or other.future_indices is not None:
            assert self.future_indices is not None and other.future_indices is not None
            self.future_indices = torch.cat((self.future_indices, other.future_indices))
            return
        for name in ("bonus_tokens", "new_seq_lens"):
            a, b = getattr(self, name), getattr(other, name)
            setattr(self, name, None if a is None or b is None else torch.cat((a, b)))
