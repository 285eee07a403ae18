"""Per-request MTP settings from ``SamplingParams.custom_params``.

A request may carry ``custom_params={"mtp": {...}}`` (override any of ``strategy``,
``threshold``, ``k_max``/``k``) or ``{"mtp": false}`` (plain decoding). The values are
validated in the tokenizer process by an AFTER hook on ``SamplingParams.verify``, so a bad
value fails that request alone (HTTP 400 / ValueError from ``Engine.generate``).

Sampled requests (temperature > 0, with top-k / top-p / min-p) decode with MTP through the
counter-based sampler of :mod:`sglang_mtp.sampling` (seeded by ``sampling_seed``). Requests
that need more than that fall back to plain decoding through SGLang's own sampler: grammar /
regex / JSON constraints, logit bias, penalties and ``min_new_tokens``; so do sampled
requests that ask for plain decoding (``{"mtp": false}``, k 1).
"""

from __future__ import annotations

import logging
import math
import os
from typing import NamedTuple, Optional

from sglang_mtp.sampling import TOP_K_ALL, Sampling, random_seed
from sglang_mtp.strategy import Strategy

logger = logging.getLogger(__name__)

KEY = "mtp"
INT32_MAX = 2**31 - 1
_FIELDS = {"strategy", "threshold", "k_max", "k"}
_KINDS = ("ntp", "conf_adapt", "static", "verify")
_WHERE = 'custom_params["mtp"]'


def parse_request_mtp(value, default: Strategy, k_limit: int) -> Strategy:
    """The strategy one request asks for (``value`` is ``custom_params["mtp"]``).

    ``k_limit`` is the server's ``--mtp-k-max`` (the forward width is fixed by it). Every
    field is checked whatever the strategy; booleans are never numbers; ``k`` and ``k_max``
    are aliases and must agree. Raises ValueError naming the bad field.
    """
    if value is None or value is True:
        return default
    if value is False:
        return Strategy.ntp()
    if not isinstance(value, dict):
        raise ValueError(f"{_WHERE} must be a dict, true or false, got {_show(value)}")
    unknown = set(value) - _FIELDS
    if unknown:
        raise ValueError(f"{_WHERE} has unknown field(s) {sorted(map(str, unknown))}; allowed: {sorted(_FIELDS)}")
    kind = value.get("strategy", default.kind if default.kind != "ntp" else "conf_adapt")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f'{_WHERE}["strategy"] must be one of {_KINDS}, got {_show(kind)}')
    if "k" in value and "k_max" in value and value["k"] != value["k_max"]:
        raise ValueError(f'{_WHERE}: "k" ({_show(value["k"])}) and "k_max" ({_show(value["k_max"])}) '
                         "contradict each other; send one of them")
    name = "k_max" if "k_max" in value else "k"
    k = value.get(name, max(default.k, 1))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= k_limit:
        raise ValueError(f'{_WHERE}["{name}"] must be an integer in [1, {k_limit}] '
                         f"(the server's --mtp-k-max), got {_show(k)}")
    tau = value.get("threshold", default.threshold if default.kind == "conf_adapt" else 0.9)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or math.isnan(tau) or not 0.0 <= tau <= 1.0:
        raise ValueError(f'{_WHERE}["threshold"] must be a number in [0, 1], got {_show(tau)}')
    if kind == "ntp" or k == 1:
        return Strategy.ntp()
    if kind == "static":
        return Strategy.static(k)
    if kind == "verify":
        return Strategy.verify(k)
    return Strategy.conf_adapt(float(tau), k)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_custom_params(custom) -> None:
    """Reject a ``custom_params`` that is not an object (SGLang would pass it on as is)."""
    if custom is not None and not isinstance(custom, dict):
        raise ValueError(f"custom_params must be an object (a JSON dict), got {type(custom).__name__} {_show(custom)}")


def needs_sampler(sp) -> bool:
    """Whether a request needs SGLang's sampler (plain decoding fallback): constraints,
    penalties, logit bias and ``min_new_tokens`` change the distribution at every position
    in ways the MTP step does not reproduce."""
    constrained = any(getattr(sp, f, None) for f in ("json_schema", "regex", "ebnf", "structural_tag"))
    penalised = (sp.frequency_penalty != 0.0 or sp.presence_penalty != 0.0
                 or sp.repetition_penalty != 1.0 or sp.min_new_tokens > 0)
    return constrained or penalised or bool(sp.logit_bias)


def request_sampling(sp) -> Optional[Sampling]:
    """The request's :class:`Sampling`, or None when it is greedy (SGLang's rule: top_k 1,
    which SGLang also sets for temperatures below 1e-6)."""
    if sp.top_k == 1:
        return None
    top_k = -1 if sp.top_k in (-1, TOP_K_ALL) else int(sp.top_k)
    return Sampling(float(sp.temperature), top_k, float(sp.top_p), float(sp.min_p))


class RequestPlan(NamedTuple):
    """How the worker decodes one request."""

    strategy: Strategy
    fallback: bool  # plain decoding through SGLang's sampler
    sampling: Optional[Sampling] = None  # MTP sampling (None: greedy)
    seed: int = 0  # its sampling_seed (a fresh random one when the request sent none)


def request_strategy(req, default: Strategy) -> RequestPlan:
    """The :class:`RequestPlan` of a scheduler ``Req``.

    Never raises: the tokenizer process has validated the settings (:func:`verify_hook`);
    anything that still fails here decodes plainly rather than taking the scheduler down.
    """
    sp = req.sampling_params
    if needs_sampler(sp) or getattr(req, "grammar", None) is not None:
        return RequestPlan(Strategy.ntp(), True)
    custom = sp.custom_params if isinstance(sp.custom_params, dict) else {}
    try:
        strategy = parse_request_mtp(custom.get(KEY), default, max(default.k, 1))
        sampling = request_sampling(sp)
    except ValueError as e:
        logger.warning("request %s: %s; decoding it plainly", getattr(req, "rid", "?"), e)
        return RequestPlan(Strategy.ntp(), False)
    if sampling is None:
        return RequestPlan(strategy, False)
    if strategy.k == 1:
        return RequestPlan(Strategy.ntp(), True)
    seed = getattr(sp, "sampling_seed", None)
    return RequestPlan(strategy, False, sampling, random_seed() if seed is None else int(seed))


def verify_hook(result, sampling_params, *args, **kwargs):
    """AFTER hook on ``SamplingParams.verify``: reject bad MTP settings before scheduling.

    A non-object ``custom_params`` is rejected on MTP servers only (``SGLANG_MTP_CONFIG`` is
    published by ``--decode-mode mtp``): a plain server keeps SGLang's own behaviour. A
    ``top_k`` past int32 is rejected on every server: SGLang 0.5.23 accepts it and its
    scheduler dies building the batch's int32 top-k tensor.
    """
    from .flags import ENV_CONFIG, MTPConfig

    top_k = getattr(sampling_params, "top_k", None)
    if isinstance(top_k, int) and top_k > INT32_MAX:
        raise ValueError(f"top_k must be at most {INT32_MAX} (-1: the whole vocabulary), got {top_k}")
    custom = sampling_params.custom_params
    if os.environ.get(ENV_CONFIG):
        check_custom_params(custom)
    if isinstance(custom, dict) and KEY in custom:
        cfg = MTPConfig.from_env()
        parse_request_mtp(custom[KEY], cfg.strategy_obj(), cfg.k_max)
    return result


def check_prompt(result, tokenizer_manager, obj, input_ids, *args, **kwargs):
    """AFTER hook on ``TokenizerManager._validate_one_request``: a 400 for requests that
    SGLang 0.5.23 accepts and its scheduler then dies on, taking every in-flight request with
    it (with or without MTP): an empty prompt (``{"text": ""}``), token ids outside the
    vocabulary (the prefill's embedding lookup fails), ill-typed ``session_params``
    (:func:`check_session_params`), any JSON value as ``positional_embed_overrides``, which
    the scheduler calls a method of (only the Python API can pass the object it expects), and
    logprob requests the sampler cannot serve (:func:`check_logprob_args`)."""
    check_session_params(getattr(obj, "session_params", None))
    check_logprob_args(obj, tokenizer_manager.model_config.vocab_size)
    overrides = getattr(obj, "positional_embed_overrides", None)
    if overrides is not None:
        from sglang.srt.managers.embed_types import PositionalEmbeds

        if not isinstance(overrides, PositionalEmbeds):
            raise ValueError("positional_embed_overrides must be a PositionalEmbeds object (Python API only), "
                             f"got {type(overrides).__name__}")
    multimodal = any(getattr(obj, f, None) is not None
                     for f in ("input_embeds", "image_data", "video_data", "audio_data"))
    if input_ids is None or multimodal:
        return result
    if len(input_ids) == 0:
        raise ValueError("the prompt is empty (0 input tokens): send a non-empty text or input_ids")
    vocab = tokenizer_manager.model_config.vocab_size
    bad = next((t for t in input_ids if not (isinstance(t, int) and 0 <= t < vocab)), None)
    if bad is not None:
        raise ValueError(f"input_ids holds token id {bad}, outside the model's vocabulary [0, {vocab})")
    return result


# SGLang 0.5.23's SessionParams fields and the JSON types each accepts (None: the default).
_SESSION_FIELDS = {"id": (str,), "rid": (str,), "offset": (int,), "replace": (bool,), "drop_previous_output": (bool,)}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def check_session_params(session) -> None:
    """``session_params`` of a request, when it is an object: known fields of the right type.
    The scheduler looks the id and rid up in dicts and slices the context at ``offset``, so a
    list or object there (or a string offset) raised in the scheduler and took the server
    down; an unknown field was a 500. Anything but an object SGLang already refuses."""
    if not isinstance(session, dict):
        return
    for name, value in session.items():
        if name not in _SESSION_FIELDS:
            raise ValueError(f"session_params has no field {name!r} (fields: {', '.join(_SESSION_FIELDS)})")
        kinds = _SESSION_FIELDS[name]
        if value is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            raise ValueError(f"session_params.{name} must be {_TYPE_NAMES[kinds[0]]} or null, got {value!r}")


def check_logprob_args(obj, vocab: int) -> None:
    """``top_logprobs_num`` above the vocabulary (OpenAI's ``logprobs``; the sampler's top-k
    over the vocabulary raises) and a ``logprob_start_len`` below -1 (-1: from the first
    output token) both took the scheduler down."""
    top = getattr(obj, "top_logprobs_num", None)
    if getattr(obj, "return_logprob", False) and isinstance(top, int) and top > vocab:
        raise ValueError(f"top_logprobs_num (logprobs) must be at most the vocabulary size {vocab}, got {top}")
    start = getattr(obj, "logprob_start_len", None)
    if isinstance(start, int) and start < -1:
        raise ValueError(f"logprob_start_len must be -1 (output tokens only) or at least 0, got {start}")
