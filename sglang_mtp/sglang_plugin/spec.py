"""Registration of the ``MTP`` speculative algorithm with SGLang.

SGLang's plugin algorithms are ``CustomSpecAlgo`` objects. The default class lacks a few
methods the scheduler calls at start-up (``carries_draft_hidden_states``,
``create_future_map``, ``need_topk``, ``get_platform_worker_cls``), and nothing sets the
query width of a plugin algorithm: :class:`MTPSpecAlgo` supplies both.
"""

from __future__ import annotations

import logging

from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
from sglang.srt.speculative.spec_registry import CustomSpecAlgo, get_spec

from .flags import (ALGORITHM, CPU_OVERLAP_ENV, MTPConfig, check_cuda_kernels, check_no_hidden_states,
                    check_supported_setup, cpu_overlap_off, trusts_remote_code)

logger = logging.getLogger(__name__)

# Set by ``register()`` when a hook could not be applied; raised at first use because
# SGLang only logs exceptions thrown by plugins.
SETUP_ERRORS: list = []


def check_setup() -> None:
    """Raise a clear start-up error if the plugin did not install completely."""
    if SETUP_ERRORS:
        raise RuntimeError("sglang-mtp plugin could not be applied: " + "; ".join(SETUP_ERRORS))


class MTPSpecAlgo(CustomSpecAlgo):
    """The MTP decode mode as SGLang sees it: a speculative algorithm without a draft model."""

    def carries_draft_hidden_states(self) -> bool:
        return False

    def need_topk(self) -> bool:
        return False

    def has_draft_kv(self) -> bool:
        # Only the target's KV is written: reserve W slots, no per-topk page rounding.
        return False

    def get_platform_worker_cls(self):
        return None

    def create_future_map(self, device, req_to_token_pool, needs_cpu_seq_lens: bool = True,
                          needs_confidence_relay: bool = False):
        from sglang.srt.managers.overlap_utils import FutureMap

        return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens, needs_confidence_relay)

    def handle_server_args(self, server_args) -> None:
        """Fix the query width (SGLang sizes KV reservations and graphs from it)."""
        check_setup()
        cfg = MTPConfig.from_env()
        width = cfg.width
        given = server_args.speculative_num_draft_tokens
        if given is not None and given != width:
            raise ValueError(
                f"speculative_num_draft_tokens={given} conflicts with --mtp-k-max {cfg.k_max} "
                f"(MTP decodes {width} = 2*k_max-1 tokens per request per step); leave it unset"
            )
        server_args.speculative_num_draft_tokens = width
        server_args.speculative_num_steps = 1
        server_args.speculative_eagle_topk = 1
        server_args.enable_mixed_chunk = False
        if cpu_overlap_off(server_args.device, server_args.disable_overlap_schedule):
            server_args.disable_overlap_schedule = True
            logger.info("MTP on a CPU: overlap scheduling off (a CPU forward is synchronous, so overlap "
                        "would only delay each step's tokens by one forward); %s=1 keeps it", CPU_OVERLAP_ENV)
        check_cuda_kernels(server_args.device)
        check_no_hidden_states(server_args)
        check_supported_setup(server_args)
        _check_mask_token(server_args.model_path, server_args.tokenizer_path, cfg.mask_token_id,
                          trusts_remote_code(server_args))


def _check_mask_token(model_path, tokenizer_path, explicit, trust_remote_code: bool = False) -> None:
    """Fail at start-up (in the launching process) when the checkpoint has no usable mask token."""
    if model_path is None:
        return
    from transformers import AutoConfig

    from .flags import check_mask_in_vocab, resolve_mask_token_id

    hf_config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    mask_id = resolve_mask_token_id(hf_config, tokenizer_path or model_path, explicit, trust_remote_code)
    vocab_size = getattr(hf_config.get_text_config(), "vocab_size", None)
    if vocab_size is not None:
        check_mask_in_vocab(mask_id, vocab_size)


def register_algorithm() -> None:
    """Register ``MTP`` once per process (the entry point may run more than once)."""
    if get_spec(ALGORITHM) is not None:
        return

    @SpeculativeAlgorithm.register(ALGORITHM, supports_overlap=True, spec_class=MTPSpecAlgo)
    def _factory(server_args):
        check_setup()
        from .worker import MTPWorker

        return MTPWorker
