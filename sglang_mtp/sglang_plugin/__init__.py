"""SGLang plugin: ``--decode-mode mtp`` on stock SGLang, loaded through the entry point

    [sglang.srt.plugins]
    mtp = sglang_mtp.sglang_plugin:register

SGLang runs :func:`register` in every one of its processes (launcher, schedulers,
detokenizer) before it parses server arguments. Modules: ``flags`` (CLI flags, Engine
helper), ``spec`` (the ``MTP`` algorithm), ``worker`` + ``state`` (the decoding worker),
(the decode step itself is the fused ops of :mod:`sglang_mtp.ops`), ``commit`` (keeps SGLang's
committed KV length truthful), ``params`` (per-request ``custom_params``), ``plain`` (all-plain decode
steps), ``metrics`` (``mtp_forward_passes``), ``graphs``
(CUDA-graph capture), ``width_graphs`` (graphs per width), ``flashinfer_plan`` (sync-free
FlashInfer verify plan), ``isolation`` (prefills skip SGLang's batch snapshot), ``headroom``
and ``verify_mask`` (SGLang's buffers sized for MTP), ``cpu_shims`` (CPU-only compatibility),
``client`` (``sgl.function``).
"""

from __future__ import annotations

import logging

SUPPORTED_SGLANG = ("0.5.23",)
logger = logging.getLogger(__name__)
_registered = False


def register() -> None:
    """Entry point: register the MTP algorithm, the server flags and the hooks it needs."""
    global _registered
    if _registered:
        return
    _registered = True
    import sglang

    from . import flags, spec

    flags.install_excepthook()
    if sglang.__version__ not in SUPPORTED_SGLANG:
        spec.SETUP_ERRORS.append(
            f"SGLang {sglang.__version__} is not supported (supported: {', '.join(SUPPORTED_SGLANG)})"
        )
    try:
        targets = _register_hooks()
        spec.register_algorithm()
        _apply_and_verify(targets)
    except Exception as e:  # SGLang would only log it: keep it for a loud failure at first use
        logger.exception("sglang-mtp plugin setup failed")
        spec.SETUP_ERRORS.append(f"{type(e).__name__}: {e}")


def _register_hooks() -> list:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from . import commit, cpu_shims, flags, flashinfer_plan, graphs, headroom, isolation, metrics, params, verify_mask

    hooks = [
        ("sglang.srt.server_args.ServerArgs.add_cli_args", flags.add_cli_args),
        ("sglang.srt.server_args.ServerArgs.from_cli_args", flags.from_cli_args),
        (commit.TARGET, commit.correct_committed_lengths),
        (headroom.TARGET, headroom.widen_rows),
        (metrics.TARGET, metrics.add_forward_passes),
        ("sglang.srt.sampling.sampling_params.SamplingParams.verify", params.verify_hook),
        ("sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request",
         params.check_prompt),
    ]
    for target, fn in hooks:
        HookRegistry.register(target, fn, HookType.AFTER)
    HookRegistry.register(isolation.TARGET, isolation.isolation_around, HookType.AROUND)
    HookRegistry.register(verify_mask.TARGET, verify_mask.no_verify_mask, HookType.AROUND)
    HookRegistry.register(commit.SESSION_TARGET, commit.session_keeps_real_kv, HookType.AROUND)
    return ([t for t, _ in hooks] + [isolation.TARGET, verify_mask.TARGET, commit.SESSION_TARGET] + cpu_shims.register()
            + graphs.register() + flashinfer_plan.register())


def _apply_and_verify(targets) -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry

    from . import spec

    HookRegistry.apply_hooks()  # idempotent; load_plugins() calls it again afterwards
    missing = [t for t in targets if t not in HookRegistry._patched]
    if missing:
        spec.SETUP_ERRORS.append(f"hook target(s) missing in this SGLang: {missing}")
