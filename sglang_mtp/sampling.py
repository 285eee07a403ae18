"""Sampling (temperature > 0) for every MTP strategy: the definition all paths follow.

A sampled request carries a :class:`Sampling` (temperature, top_k, top_p, min_p) and an
integer seed. Each logits row predicts the token at one absolute sequence position ``pos``
and is processed like SGLang's sampler does it: the ``<MTP>`` id is removed, logits are
divided by the temperature, and top-k, top-p and min-p keep a subset of the softmax
(:func:`truncate`, SGLang's order and rules). The row's token is then drawn by Gumbel-max:
``argmax_i z_i - log(-log u_i)`` with ``u_i = noise_uniform(seed, pos, i)``, an exact sample
of ``softmax(z)``. The noise is a hash of (seed, pos, i), so a request draws the same tokens
whether it runs alone or in any batch, on any device (``ops.sample_scan``).

Per strategy (the accept rules of :mod:`sglang_mtp.step`, with sampled tokens):

- ``ntp``: one sampled token per pass: plain sampling.
- ``static`` / ``conf_adapt`` (lossy): every block row samples its own position's token from
  its processed distribution. A row's confidence is the processed probability of the token
  it sampled; ConfAdapt accepts the longest leading run with confidence >= tau (at least one
  token). As the temperature goes to 0 every confidence goes to 1, so ConfAdapt accepts whole
  blocks (static k); send temperature 0 for greedy ConfAdapt.
- ``verify`` (lossless): the mask rows sample drafts with the noise of the positions they
  predict; the next pass samples each position from the true distribution with the SAME
  noise and keeps a draft only when it equals that sample. Every emitted token is therefore
  exactly the token plain sampling with the same seed would emit: the output equals ``ntp``
  sampling token for token (up to floating-point differences between the two forwards), so
  its distribution is plain sampling's. This is speculative sampling with a coupled draft:
  a draft d drawn independently would be accepted with probability p(d) and a rejection
  would resample from p without d; sharing the noise keeps that and accepts more often when
  the mask row's distribution is close to the true one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch

TOP_K_ALL = 1 << 30  # SGLang's "whole vocabulary"
SAMPLING_EPS = 1e-6  # SGLang: temperatures below this are greedy


@dataclass(frozen=True)
class Sampling:
    """A request's sampling parameters (SGLang's names and defaults; temperature 0 = greedy)."""

    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t) or not 0.0 <= t < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        k = self.top_k
        if isinstance(k, bool) or not isinstance(k, int) or not (k == -1 or k >= 1):
            raise ValueError(f"top_k must be -1 (disabled) or an integer >= 1, got {k!r}")
        for name, lo_open in (("top_p", True), ("min_p", False)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
            if not ok or not ((0.0 < v <= 1.0) if lo_open else (0.0 <= v <= 1.0)):
                raise ValueError(f"{name} must be in {'(0, 1]' if lo_open else '[0, 1]'}, got {v!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < SAMPLING_EPS or self.top_k == 1

    @property
    def inv_temperature(self) -> float:
        """0 for greedy rows (the scan takes the argmax), else 1 / temperature."""
        return 0.0 if self.greedy else 1.0 / self.temperature

    @property
    def truncates(self) -> bool:
        """Whether top-k, top-p or min-p remove anything (needs :func:`truncate`)."""
        return not self.greedy and (self.top_k not in (-1, TOP_K_ALL) or self.top_p < 1.0 or self.min_p > 0.0)

    @staticmethod
    def parse(spec) -> "Sampling":
        """From None (greedy), a Sampling, a temperature, or a dict of the four fields."""
        if spec is None:
            return Sampling(temperature=0.0)
        if isinstance(spec, Sampling):
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return Sampling(temperature=float(spec))
        if isinstance(spec, dict):
            unknown = set(spec) - {"temperature", "top_k", "top_p", "min_p"}
            if unknown:
                raise ValueError(f"unknown sampling field(s) {sorted(unknown)}")
            return Sampling(**spec)
        raise ValueError(f"sampling must be None, a Sampling, a temperature or a dict, got {type(spec).__name__}")


def random_seed() -> int:
    """A fresh seed for requests that do not send one (non-reproducible, like SGLang)."""
    return random.getrandbits(63)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [-2**63, 2**63), got {seed!r}")
    return seed


class RowSampling(NamedTuple):
    """Per-request sampling tensors of a batch ([B] each, on the logits' device)."""

    inv_temperature: torch.Tensor  # float32, 0 = greedy
    seed: torch.Tensor  # int64
    top_k: torch.Tensor  # int64
    top_p: torch.Tensor  # float32
    min_p: torch.Tensor  # float32
    truncates: bool  # host flag: some request needs truncate()

    @staticmethod
    def build(samplings, seeds, device=None) -> "RowSampling":
        f32 = dict(dtype=torch.float32, device=device)
        i64 = dict(dtype=torch.int64, device=device)
        return RowSampling(
            torch.tensor([s.inv_temperature for s in samplings], **f32), torch.tensor(list(seeds), **i64),
            torch.tensor([TOP_K_ALL if s.top_k == -1 else s.top_k for s in samplings], **i64),
            torch.tensor([s.top_p for s in samplings], **f32), torch.tensor([s.min_p for s in samplings], **f32),
            any(s.truncates for s in samplings))

    def select(self, rows) -> "RowSampling":
        return RowSampling(*(t[rows] for t in self[:5]), self.truncates)


def truncate(logits, inv_temperature, top_k, top_p, min_p, suppress_token_id: int = -1):
    """Logits [R, V] with -inf outside each sampled row's top-k / top-p / min-p set.

    Per-row parameters [R]. SGLang's rules on p = softmax(logits * inv_temperature), sorted
    in descending order: rank >= top_k goes, an entry whose preceding mass already exceeds
    top_p goes, an entry below min_p * max(p) goes. Rows with inv_temperature 0 (greedy) are
    returned as they are. Graph-safe (one sort, no host sync).
    """
    x = logits.float()
    if 0 <= suppress_token_id < x.shape[1]:
        x = x.clone()
        x[:, suppress_token_id] = float("-inf")
    p = torch.softmax(x * inv_temperature[:, None], dim=-1)
    p_sort, order = p.sort(dim=-1, descending=True)
    rank = torch.arange(x.shape[1], device=x.device)[None, :]
    drop = (rank >= top_k[:, None]) | ((p_sort.cumsum(-1) - p_sort) > top_p[:, None])
    drop |= p_sort < (p_sort[:, :1] * min_p[:, None])
    drop &= (inv_temperature > 0)[:, None]
    removed = torch.zeros_like(drop).scatter(1, order, drop)
    return torch.where(removed, torch.full_like(x, float("-inf")), x).to(logits.dtype)


def noise_uniform(seed, position, vocab: int) -> np.ndarray:
    """u(seed, pos, i) in (0, 1) for rows (seed, pos) and ids 0..vocab-1: float32 [R, V].

    The definition of csrc/sample_rule.h (MurmurHash3's finaliser over 64-bit integers)."""
    with np.errstate(over="ignore"):
        seed = np.asarray(seed, dtype=np.int64).astype(np.uint64)[:, None]
        pos = np.asarray(position, dtype=np.int64).astype(np.uint64)[:, None]
        row = _mix(seed + np.uint64(0x9E3779B97F4A7C15) * pos)
        ids = np.arange(vocab, dtype=np.uint64)[None, :]
        h = _mix(row + np.uint64(0xC2B2AE3D27D4EB4F) * (ids + np.uint64(1)))
        return ((2 * (h >> np.uint64(41)) + 1).astype(np.float32) * np.float32(2.0**-24)).astype(np.float32)


def _mix(x):
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def row_params(sampling: Optional[RowSampling], width: int, first_position):
    """(inv_temperature, seed, position) per logits row [B*width] for ``ops.sample_scan``:
    row j of request b predicts position ``first_position[b] + j``."""
    j = torch.arange(width, device=first_position.device)
    pos = (first_position.long()[:, None] + j[None, :]).reshape(-1)
    return per_row(sampling.inv_temperature, width), per_row(sampling.seed, width), pos


def per_row(t, width: int):
    """[B] -> [B*width]: each request's value on each of its rows (no host sync, unlike
    ``repeat_interleave`` on a GPU)."""
    return t[:, None].expand(t.shape[0], width).reshape(-1).contiguous()
