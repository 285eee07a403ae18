"""Per-request MTP state owned by the worker, in tensors indexed by ``req_pool_idx``.

SGLang restores the ScheduleBatch after every forward (``_forward_isolation``) and, with
overlap scheduling, relays only one bonus token per request between rounds, so nothing of
ours can live on the batch. A request owns its ``req_pool_idx`` row from its prefill until
SGLang releases it; :meth:`MTPState.admit` overwrites every field, so rows of finished
requests need no cleanup.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Gathered:
    """The state of the requests of one batch ([B] tensors, pending [B, W])."""

    pending: torch.Tensor  # int64, tokens whose KV is not in the cache yet
    pending_len: torch.Tensor  # int32
    draft_len: torch.Tensor  # int32, trailing unverified drafts (verify mode)
    k: torch.Tensor  # int32, block size / k_max (1 = plain decoding)
    threshold: torch.Tensor  # float32, ConfAdapt tau (0 = accept the whole block)
    verify: torch.Tensor  # bool
    sampled: torch.Tensor  # bool, plain decoding through SGLang's sampler (fallback)
    first: torch.Tensor  # bool, the request's first decode step (see step_adapter)
    first_token: torch.Tensor  # int64, t1 emitted by the prefill


_FIELDS = ("pending", "pending_len", "draft_len", "k", "threshold", "verify", "sampled", "first",
           "first_token")


class MTPState:
    """Decoding state of every request slot (``pool_size`` rows)."""

    def __init__(self, pool_size: int, width: int, device):
        z = dict(device=device)
        self.width = width
        self.pending = torch.zeros(pool_size, width, dtype=torch.int64, **z)
        self.pending_len = torch.zeros(pool_size, dtype=torch.int32, **z)
        self.draft_len = torch.zeros(pool_size, dtype=torch.int32, **z)
        self.k = torch.ones(pool_size, dtype=torch.int32, **z)
        self.threshold = torch.zeros(pool_size, dtype=torch.float32, **z)
        self.verify = torch.zeros(pool_size, dtype=torch.bool, **z)
        self.sampled = torch.zeros(pool_size, dtype=torch.bool, **z)
        self.first = torch.zeros(pool_size, dtype=torch.bool, **z)
        self.first_token = torch.zeros(pool_size, dtype=torch.int64, **z)
        # Host-side mirrors for decisions that must not read the device.
        self.host_k: dict = {}
        self.host_first: set = set()
        self.host_sampled: set = set()

    def admit(self, rows, rows_host, strategies, sampled, last_prompt_token, first_token) -> None:
        """Start requests whose prefill emitted ``first_token`` [B] (int64).

        Plain-decoding requests (k == 1) start with pending = [t1]; MTP requests start with
        pending = [x_{P-1}] and ``first`` set (their first step re-runs the prompt's last row).
        """
        dev = self.k.device
        k = torch.tensor([s.k for s in strategies], dtype=torch.int32).to(dev, non_blocking=True)
        self.k[rows] = k
        self.threshold[rows] = torch.tensor([s.scan_threshold for s in strategies],
                                            dtype=torch.float32).to(dev, non_blocking=True)
        self.verify[rows] = torch.tensor([s.is_verify for s in strategies]).to(dev, non_blocking=True)
        self.sampled[rows] = torch.tensor(list(sampled), dtype=torch.bool).to(dev, non_blocking=True)
        mtp = k > 1
        self.first[rows] = mtp
        self.pending[rows, 0] = torch.where(mtp, last_prompt_token, first_token)
        self.pending_len[rows] = 1
        self.draft_len[rows] = 0
        self.first_token[rows] = first_token
        for r, s, smp in zip(rows_host, strategies, sampled):
            self.host_k[r] = s.k
            (self.host_first.add if s.k > 1 else self.host_first.discard)(r)
            (self.host_sampled.add if smp else self.host_sampled.discard)(r)

    def gather(self, rows: torch.Tensor) -> Gathered:
        return Gathered(*(getattr(self, f)[rows] for f in _FIELDS))

    def update(self, rows, rows_host, pending, pending_len, draft_len) -> None:
        """Store the next step's pending tokens; the first MTP step is then behind."""
        self.pending[rows] = pending
        self.pending_len[rows] = pending_len
        self.draft_len[rows] = draft_len
        self.first[rows] = False
        self.host_first.difference_update(rows_host)

    def first_mask_host(self, rows_host) -> list:
        """Which requests of a batch are in their first MTP step (host-side, no sync)."""
        return [r in self.host_first for r in rows_host]

    def all_plain(self, rows_host) -> bool:
        """Whether every request of a batch decodes one token per step."""
        return all(self.host_k.get(r, 1) == 1 for r in rows_host)

    def any_sampled(self, rows_host) -> bool:
        return any(r in self.host_sampled for r in rows_host)
