"""Decoding modes of the serving benchmark and the server flags that select them.

Mode specs (``--modes`` is a comma-separated list of them):

==========================  ==================================================================
``ntp``                     plugin loaded, ``--decode-mode ntp`` (SGLang's own decoding): the
                            baseline every ratio is taken against
``plain``                   SGLang without any plugin flag (to show ``ntp`` costs nothing)
``static:K``                ``--decode-mode mtp --mtp-strategy static --mtp-k-max K``
``conf_adapt:TAU:KMAX``     ``--decode-mode mtp --mtp-strategy conf_adapt --mtp-threshold TAU
                            --mtp-k-max KMAX``
``verify:KMAX``             ``--decode-mode mtp --mtp-strategy verify --mtp-k-max KMAX``
``eagle3[:STEPS:TOPK:N]``   SGLang's EAGLE-3 with ``--draft-model`` (default 3:1:4)
==========================  ==================================================================

Requests never carry MTP fields: a mode is a server configuration, so the baseline cannot be
sent MTP settings by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

DEFAULT_MODES = ("ntp,static:2,static:3,static:4,conf_adapt:0.95:8,conf_adapt:0.9:8,"
                 "conf_adapt:0.8:8,conf_adapt:0.9:16,verify:8")
KINDS = ("ntp", "plain", "static", "conf_adapt", "verify", "eagle3")
MAX_K = 16


@dataclass(frozen=True)
class Mode:
    """One server configuration. ``spec`` is the string the user wrote (the mode's name)."""

    spec: str
    kind: str
    k_max: int = 1
    threshold: Optional[float] = None
    eagle: Tuple[int, int, int] = (3, 1, 4)

    def server_flags(self, draft_model: Optional[str] = None) -> List[str]:
        """The ``launch_server`` flags that select this mode."""
        if self.kind == "plain":
            return []
        if self.kind == "ntp":
            return ["--decode-mode", "ntp"]
        if self.kind == "eagle3":
            if not draft_model:
                raise ValueError(f"mode {self.spec!r} needs --draft-model (an EAGLE-3 draft checkpoint)")
            steps, topk, n = self.eagle
            return ["--speculative-algorithm", "EAGLE3", "--speculative-draft-model-path", draft_model,
                    "--speculative-num-steps", str(steps), "--speculative-eagle-topk", str(topk),
                    "--speculative-num-draft-tokens", str(n)]
        flags = ["--decode-mode", "mtp", "--mtp-strategy", self.kind, "--mtp-k-max", str(self.k_max)]
        if self.kind == "conf_adapt":
            flags += ["--mtp-threshold", repr(self.threshold)]
        return flags

    @property
    def is_baseline_kind(self) -> bool:
        return self.kind in ("ntp", "plain")


def _int_field(value: str, spec: str, name: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"mode {spec!r}: {name} must be an integer, got {value!r}") from None
    if not lo <= n <= hi:
        raise ValueError(f"mode {spec!r}: {name} must be in [{lo}, {hi}], got {n}")
    return n


def parse_mode(spec: str) -> Mode:
    """Parse one mode spec (see the module docstring); ValueError names the bad part."""
    spec = spec.strip()
    kind, *fields = spec.split(":")
    if kind not in KINDS:
        raise ValueError(f"mode {spec!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    arity = {"ntp": (0,), "plain": (0,), "static": (1,), "verify": (1,), "conf_adapt": (2,), "eagle3": (0, 3)}
    if len(fields) not in arity[kind]:
        want = " or ".join(str(n) for n in arity[kind])
        raise ValueError(f"mode {spec!r}: {kind} takes {want} ':'-separated value(s), got {len(fields)}")
    if kind in ("static", "verify"):
        return Mode(spec, kind, k_max=_int_field(fields[0], spec, "k", 1, MAX_K))
    if kind == "conf_adapt":
        try:
            tau = float(fields[0])
        except ValueError:
            raise ValueError(f"mode {spec!r}: threshold must be a number, got {fields[0]!r}") from None
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"mode {spec!r}: threshold must be in [0, 1], got {tau}")
        return Mode(spec, kind, k_max=_int_field(fields[1], spec, "k_max", 1, MAX_K), threshold=tau)
    if kind == "eagle3" and fields:
        steps, topk, n = (_int_field(v, spec, name, 1, 64) for v, name in zip(fields, ("steps", "topk", "draft tokens")))
        return Mode(spec, kind, eagle=(steps, topk, n))
    return Mode(spec, kind)


def parse_modes(text: str) -> List[Mode]:
    """Parse ``--modes``; names must be unique."""
    modes = [parse_mode(s) for s in text.split(",") if s.strip()]
    if not modes:
        raise ValueError("--modes: no mode given")
    names = [m.spec for m in modes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--modes: repeated mode(s) {dupes}")
    return modes


def parse_concurrency(text: str) -> List[int]:
    """Parse ``--concurrency`` (comma-separated positive integers, kept in the given order)."""
    try:
        levels = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--concurrency must be comma-separated integers, got {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise ValueError(f"--concurrency needs integers >= 1, got {text!r}")
    return levels
