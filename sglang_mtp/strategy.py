"""Decoding strategies: what one request asks of the MTP decoder.

Every decode path of the project (the reference decoder, the SGLang worker, the benchmarks)
takes a :class:`Strategy`. Four kinds exist:

- ``ntp``: plain greedy next-token decoding, one token per forward pass (``k == 1``).
- ``static``: append ``k - 1`` masks, accept all ``k`` predictions (lossy).
- ``conf_adapt``: append ``k - 1`` masks, accept the longest leading run of predictions whose
  top-1 probability is ``>= threshold`` (at least one, at most ``k``; lossy).
- ``verify``: the mask predictions are drafts checked by the next pass; output equals ``ntp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("ntp", "static", "conf_adapt", "verify")
# The widest block any path supports; the SGLang worker's query width is 2 * k - 1.
MAX_K = 64


@dataclass(frozen=True)
class Strategy:
    """One request's decoding strategy.

    ``k`` is the block size (static) or the largest block (conf_adapt, verify);
    ``threshold`` is ConfAdapt's tau (0 for static, unused by ntp and verify).
    """

    kind: str = "ntp"
    k: int = 1
    threshold: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"strategy kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise ValueError(f"strategy k must be an integer, got {self.k!r}")
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"strategy k must be in [1, {MAX_K}], got {self.k}")
        if self.kind == "ntp" and self.k != 1:
            raise ValueError(f"strategy 'ntp' has k == 1, got k={self.k}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t) or not 0.0 <= t <= 1.0:
            raise ValueError(f"strategy threshold must be a number in [0, 1], got {t!r}")

    @staticmethod
    def ntp() -> "Strategy":
        return Strategy("ntp", 1, 0.0)

    @staticmethod
    def static(k: int) -> "Strategy":
        return Strategy("static", k, 0.0)

    @staticmethod
    def conf_adapt(threshold: float = 0.9, k_max: int = 8) -> "Strategy":
        return Strategy("conf_adapt", k_max, float(threshold))

    @staticmethod
    def verify(k_max: int = 8) -> "Strategy":
        return Strategy("verify", k_max, 0.0)

    @property
    def is_verify(self) -> bool:
        return self.kind == "verify"

    @property
    def scan_threshold(self) -> float:
        """Threshold handed to ``confidence_scan``: 0 accepts the whole block."""
        return self.threshold if self.kind == "conf_adapt" else 0.0

    @staticmethod
    def parse(spec) -> "Strategy":
        """Build a strategy from a Strategy, a name (``"ntp"``), ``"static:3"``,
        ``"conf_adapt:0.9:8"``, ``"verify:4"`` or a dict such as
        ``{"strategy": "conf_adapt", "threshold": 0.9, "k_max": 8}``."""
        if isinstance(spec, Strategy):
            return spec
        if isinstance(spec, str):
            return _parse_str(spec)
        if isinstance(spec, dict):
            return _parse_dict(spec)
        raise ValueError(f"strategy must be a Strategy, str or dict, got {type(spec).__name__}")


def _parse_str(spec: str) -> Strategy:
    name, *args = spec.strip().split(":")
    try:
        if name == "ntp" and not args:
            return Strategy.ntp()
        if name == "static" and len(args) == 1:
            return Strategy.static(int(args[0]))
        if name == "conf_adapt" and len(args) <= 2:
            tau = float(args[0]) if args else 0.9
            return Strategy.conf_adapt(tau, int(args[1]) if len(args) > 1 else 8)
        if name == "verify" and len(args) <= 1:
            return Strategy.verify(int(args[0]) if args else 8)
    except ValueError as e:
        raise ValueError(f"bad strategy {spec!r}: {e}") from None
    raise ValueError(
        f"bad strategy {spec!r}: expected ntp, static:K, conf_adapt[:TAU[:K_MAX]] or verify[:K_MAX]"
    )


_DICT_KEYS = {"strategy", "k", "k_max", "threshold"}


def _parse_dict(spec: dict) -> Strategy:
    unknown = set(spec) - _DICT_KEYS
    if unknown:
        raise ValueError(f"unknown strategy field(s) {sorted(unknown)}; allowed: {sorted(_DICT_KEYS)}")
    kind = spec.get("strategy", "conf_adapt")
    k = spec.get("k", spec.get("k_max"))
    if kind == "ntp":
        return Strategy.ntp()
    if kind == "static":
        return Strategy.static(k if k is not None else 3)
    if kind == "conf_adapt":
        return Strategy.conf_adapt(spec.get("threshold", 0.9), k if k is not None else 8)
    if kind == "verify":
        return Strategy.verify(k if k is not None else 8)
    raise ValueError(f"strategy must be one of {KINDS}, got {kind!r}")
