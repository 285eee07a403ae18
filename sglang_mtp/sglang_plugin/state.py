"""Per-request MTP state owned by the worker, in tensors indexed by ``req_pool_idx``.

SGLang restores the ScheduleBatch after every decode forward (``_forward_isolation``) and, with
overlap scheduling, relays only one bonus token per request between rounds, so nothing of
ours can live on the batch. A request owns its ``req_pool_idx`` row from its prefill until
SGLang releases it; :meth:`MTPState.admit` overwrites every field, so rows of finished
requests need no cleanup. The decode step reads and writes these tensors through the fused
ops (``ops.step_inputs`` / ``ops.accept_commit``); the host mirrors are numpy arrays indexed
by the batch's ``req_pool_indices_cpu``, so a step's host decisions cost O(1) Python calls.
"""

from __future__ import annotations

import numpy as np
import torch

from sglang_mtp.sampling import TOP_K_ALL, RowSampling, Sampling

GREEDY = Sampling(temperature=0.0)


class MTPState:
    """Decoding state of every request slot (``pool_size`` rows)."""

    def __init__(self, pool_size: int, width: int, device):
        z = dict(device=device)
        self.width = width
        self.pending = torch.zeros(pool_size, width, dtype=torch.int64, **z)  # tokens without KV yet
        self.pending_len = torch.zeros(pool_size, dtype=torch.int32, **z)
        self.draft_len = torch.zeros(pool_size, dtype=torch.int32, **z)  # trailing unverified drafts
        self.k = torch.ones(pool_size, dtype=torch.int32, **z)  # block size / k_max (1 = plain)
        self.threshold = torch.zeros(pool_size, dtype=torch.float32, **z)  # ConfAdapt tau
        self.verify = torch.zeros(pool_size, dtype=torch.bool, **z)
        self.sampled = torch.zeros(pool_size, dtype=torch.bool, **z)  # SGLang's sampler (fallback)
        self.first = torch.zeros(pool_size, dtype=torch.bool, **z)  # first decode step (see ops)
        self.first_token = torch.zeros(pool_size, dtype=torch.int64, **z)  # t1, from the prefill
        self.unsent = torch.zeros(pool_size, dtype=torch.int32, **z)  # pending[1:1+unsent] not emitted yet
        # MTP sampling (sglang_mtp.sampling): 0 inverse temperature = greedy.
        self.inv_temperature = torch.zeros(pool_size, dtype=torch.float32, **z)
        self.seed = torch.zeros(pool_size, dtype=torch.int64, **z)
        self.top_k = torch.full((pool_size,), TOP_K_ALL, dtype=torch.int64, **z)
        self.top_p = torch.ones(pool_size, dtype=torch.float32, **z)
        self.min_p = torch.zeros(pool_size, dtype=torch.float32, **z)
        # Host-side mirrors for decisions that must not read the device.
        self.host_k = np.ones(pool_size, dtype=np.int32)
        self.host_first = np.zeros(pool_size, dtype=bool)
        self.host_sampled = np.zeros(pool_size, dtype=bool)
        self.host_sampling = np.zeros(pool_size, dtype=bool)  # MTP sampling
        self.host_truncates = np.zeros(pool_size, dtype=bool)  # ... with top-k / top-p / min-p
        self.host_pending_bound = np.ones(pool_size, dtype=np.int64)  # >= pending_len (width choice)
        self.host_unsent = np.zeros(pool_size, dtype=bool)  # may have unsent tokens

    def admit(self, rows, rows_host, strategies, sampled, last_prompt_token, first_token, samplings=None,
              seeds=None, started=None) -> None:
        """Start requests whose prefill emitted ``first_token`` [B] (int64).

        ``samplings`` / ``seeds``: per request a :class:`~sglang_mtp.sampling.Sampling` (None =
        greedy) and its seed; None for an all-greedy batch.

        Plain-decoding requests (k == 1) start with pending = [t1]; MTP requests start with
        pending = [x_{P-1}] and ``first`` set (their first step re-runs the prompt's last row),
        except those in ``started`` (host bools, None = none): their prefill was their first
        step (a block of 1 at cap 1), so they start from t1 like plain ones and keep their k.
        """
        dev = self.k.device
        k_host = np.array([s.k for s in strategies], dtype=np.int32)
        k = torch.from_numpy(k_host).to(dev, non_blocking=True)
        self.k[rows] = k
        self.threshold[rows] = torch.tensor([s.scan_threshold for s in strategies],
                                            dtype=torch.float32).to(dev, non_blocking=True)
        self.verify[rows] = torch.tensor([s.is_verify for s in strategies]).to(dev, non_blocking=True)
        self.sampled[rows] = torch.tensor(list(sampled), dtype=torch.bool).to(dev, non_blocking=True)
        first_host = k_host > 1
        if started is not None:
            first_host &= ~np.asarray(started, dtype=bool)
        first = torch.from_numpy(first_host).to(dev, non_blocking=True)
        self.first[rows] = first
        self.pending[rows, 0] = torch.where(first, last_prompt_token, first_token)
        self.pending_len[rows] = 1
        self.draft_len[rows] = 0
        self.first_token[rows] = first_token
        idx = np.asarray(rows_host, dtype=np.int64)
        self.host_k[idx] = k_host
        self.host_first[idx] = first_host
        self.host_pending_bound[idx] = 1
        self.host_unsent[idx] = False
        self.host_sampled[idx] = np.asarray(sampled, dtype=bool)
        samplings = [None] * len(idx) if samplings is None else samplings
        seeds = [0] * len(idx) if seeds is None else seeds
        rs = RowSampling.build([s or GREEDY for s in samplings], seeds)
        for name, t in zip(("inv_temperature", "seed", "top_k", "top_p", "min_p"), rs[:5]):
            getattr(self, name)[rows] = t.to(dev, non_blocking=True)
        self.host_sampling[idx] = [s is not None for s in samplings]
        self.host_truncates[idx] = [s is not None and s.truncates for s in samplings]

    def start_blocks(self, rows, idx, unsent, blocks, lossy) -> None:
        """Requests whose first step was their prefill (prefill_masks.py; ``accept_commit``
        has written their pending block): the first decode step emits
        ``pending[1:1+unsent]`` before its own tokens."""
        self.unsent[rows] = unsent.to(torch.int32)
        self.host_first[idx] = False
        self.host_pending_bound[idx] = blocks
        self.host_unsent[idx] = lossy

    def start_plain(self, idx) -> None:
        """Requests (host pool rows ``idx``) about to take their first step at cap 1: they go on
        from t1, the prefill's token, as a plain request would (``first`` cleared). The first
        step would otherwise re-feed the last prompt token and need 2 rows, one wider step."""
        rows = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.pending.device, non_blocking=True)
        self.pending[rows, 0] = self.first_token[rows]
        self.first[rows] = False
        self.host_first[idx] = False

    def take_unsent(self, rows, idx):
        """(pending tokens [B, Pw], unsent counts [B]) of a batch about to step, when some
        request of it still has prefill block tokens to emit (then cleared), else None."""
        if not self.host_unsent[idx].any():
            return None
        taken = (self.pending[rows].clone(), self.unsent[rows].clone())
        self.unsent[rows] = 0
        self.host_unsent[idx] = False
        return taken

    def tensors(self):
        """The state arguments of ``ops.step_inputs`` (after ``rows, seq_lens, ...``)."""
        return self.pending, self.pending_len, self.draft_len, self.k, self.threshold, self.verify, self.first

    def stepped(self, idx) -> None:
        """The requests ``idx`` (host pool rows) took a decode step: no first step is left."""
        self.host_first[idx] = False

    def plan_step(self, idx, cap: int):
        """Load-adaptive step (:mod:`sglang_mtp.width`): the width the step needs under block
        cap ``cap`` (pending tokens + capped block - 1, widest of the batch).
        Records the blocks as the bound on the next step's pending tokens (a step leaves at
        most its block pending), so no device value is read. At cap 1, requests about to take
        their first step start plainly (:meth:`start_plain`)."""
        first = self.host_first[idx]
        if cap == 1 and first.any():
            self.start_plain(idx[first])
        # A first step needs 2 rows (its row 0 re-predicts t1): min(k, cap) has them above cap 1.
        block = np.minimum(self.host_k[idx].astype(np.int64), cap)
        need = int((self.host_pending_bound[idx] + block - 1).max()) if len(idx) else 1
        self.host_pending_bound[idx] = block
        return need

    def all_plain(self, idx) -> bool:
        """Whether every request of a batch decodes one token per step."""
        return bool((self.host_k[idx] == 1).all())

    def any_sampled(self, idx) -> bool:
        return bool(self.host_sampled[idx].any())

    def row_sampling(self, rows, idx):
        """The batch's :class:`~sglang_mtp.sampling.RowSampling`, or None when no request of
        it samples with MTP (then the step takes the plain argmax scan)."""
        if not self.host_sampling[idx].any():
            return None
        return RowSampling(self.inv_temperature[rows], self.seed[rows], self.top_k[rows], self.top_p[rows],
                           self.min_p[rows], bool(self.host_truncates[idx].any()))
