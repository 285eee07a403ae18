"""Per-request MTP settings from ``SamplingParams.custom_params``.

A request may carry ``custom_params={"mtp": {...}}`` (override any of ``strategy``,
``threshold``, ``k_max``/``k``) or ``{"mtp": false}`` (plain decoding). The values are
validated in the tokenizer process by an AFTER hook on ``SamplingParams.verify``, so a bad
value fails that request alone (HTTP 400 / ValueError from ``Engine.generate``).

Requests that MTP cannot serve greedily fall back to plain decoding through SGLang's own
sampler: non-greedy sampling, grammar / regex / JSON constraints, logit bias, penalties and
``min_new_tokens``.
"""

from __future__ import annotations

from sglang_mtp.strategy import Strategy

KEY = "mtp"
_FIELDS = {"strategy", "threshold", "k_max", "k"}
_KINDS = ("ntp", "conf_adapt", "static", "verify")


def parse_request_mtp(value, default: Strategy, k_limit: int) -> Strategy:
    """The strategy one request asks for (``value`` is ``custom_params["mtp"]``).

    ``k_limit`` is the server's ``--mtp-k-max`` (the forward width is fixed by it).
    Raises ValueError naming the bad field.
    """
    if value is None or value is True:
        return default
    if value is False:
        return Strategy.ntp()
    if not isinstance(value, dict):
        raise ValueError(f'custom_params["mtp"] must be a dict, true or false, got {value!r}')
    unknown = set(value) - _FIELDS
    if unknown:
        raise ValueError(f'custom_params["mtp"] has unknown field(s) {sorted(unknown)}; '
                         f"allowed: {sorted(_FIELDS)}")
    kind = value.get("strategy", default.kind if default.kind != "ntp" else "conf_adapt")
    if kind not in _KINDS:
        raise ValueError(f'custom_params["mtp"]["strategy"] must be one of {_KINDS}, got {kind!r}')
    k = value.get("k_max", value.get("k", max(default.k, 1)))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= k_limit:
        raise ValueError(f'custom_params["mtp"]["k_max"] must be an integer in [1, {k_limit}] '
                         f"(the server's --mtp-k-max), got {k!r}")
    tau = value.get("threshold", default.threshold if default.kind == "conf_adapt" else 0.9)
    try:
        if kind == "ntp" or k == 1:
            return Strategy.ntp()
        if kind == "static":
            return Strategy.static(k)
        if kind == "verify":
            return Strategy.verify(k)
        return Strategy.conf_adapt(tau, k)
    except ValueError as e:
        raise ValueError(f'custom_params["mtp"]: {e}') from None


def needs_sampler(sp) -> bool:
    """Whether a request must be decoded by SGLang's sampler (plain decoding fallback)."""
    greedy = sp.top_k == 1
    constrained = any(getattr(sp, f, None) for f in ("json_schema", "regex", "ebnf", "structural_tag"))
    penalised = (sp.frequency_penalty != 0.0 or sp.presence_penalty != 0.0
                 or sp.repetition_penalty != 1.0 or sp.min_new_tokens > 0)
    return (not greedy) or constrained or penalised or bool(sp.logit_bias)


def request_strategy(req, default: Strategy):
    """(strategy, sampled) for a scheduler ``Req``; ``sampled`` means sampler fallback."""
    sp = req.sampling_params
    custom = sp.custom_params or {}
    if needs_sampler(sp) or getattr(req, "grammar", None) is not None:
        return Strategy.ntp(), True
    return parse_request_mtp(custom.get(KEY), default, max(default.k, 1)), False


def verify_hook(result, sampling_params, *args, **kwargs):
    """AFTER hook on ``SamplingParams.verify``: reject bad ``custom_params["mtp"]`` early."""
    custom = sampling_params.custom_params
    if isinstance(custom, dict) and KEY in custom:
        from .flags import MTPConfig

        cfg = MTPConfig.from_env()
        parse_request_mtp(custom[KEY], cfg.strategy_obj(), cfg.k_max)
    return result
