"""Triton attention on an MTP server allocates no verify mask (issue 13, defect D).

When SGLang's Triton backend sets up CUDA graphs it allocates a verify mask for the largest
captured batch: ``max_bs * W * (context + W)`` bytes (the FULL_MASK layout EAGLE's tree
kernel writes). It reads that buffer only when a verify input carries a custom mask, and
MTP's carries none (causal: a mask row only looks left, ``spec_input.MTPVerifyInput``). So on
an MTP server the buffer is never read: at a 131k context and W 15 it holds 67 MB for 34
captured requests, 503 MB for 256. This AROUND hook on the name the Triton backend calls
returns None on MTP servers, and Triton takes the mask-less path MTP's forwards take anyway.
Other algorithms keep SGLang's buffer. SGLang's hook registry also rebinds the name in the
backends that import the same function (FA3, FlashMLA, TRT-LLM MLA, DeepSeek-V4), so on an MTP
server they get None too. None of them reads it for MTP: FA3 only for multi-branch drafts
(topk > 1), the others never (they ask with ``is_read=False``), and each keeps None when
nothing verifies.
"""

from __future__ import annotations

import logging

from .flags import ALGORITHM

logger = logging.getLogger(__name__)

TARGET = "sglang.srt.layers.attention.triton_backend.maybe_create_verify_mask"


def no_verify_mask(original, *args, **kwargs):
    """AROUND hook: no buffer on MTP servers, SGLang's own otherwise."""
    from sglang.srt.mem_cache import allocation_sizing as sizing

    if sizing.get_spec().speculative_algorithm == ALGORITHM:
        bs, width, context = (kwargs.get(n) for n in ("max_bs", "num_draft_tokens", "max_context_len"))
        if all(isinstance(v, int) for v in (bs, width, context)):
            logger.info("MTP: no Triton verify mask (never read by MTP's causal verify): %.1f MB not allocated",
                        bs * width * (context + width) / 1e6)
        return None
    return original(*args, **kwargs)
