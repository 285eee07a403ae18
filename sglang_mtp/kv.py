"""A Hugging Face KV cache with holes, for the reference decoder.

Every pass appends W query positions per request to a ``DynamicCache``, but only a prefix of
them is real (the pending tokens, ``keep`` of the step); the rest were computed from mask or
padding inputs and must never be attended again. Instead of cutting them out each step we
keep a validity bitmap and hand the model a 4-D additive attention mask in which each query
sees its request's VALID earlier entries plus, causally, the queries of its own pass. Dead
columns are squeezed out now and then (``compact``), which is safe because RoPE positions
were applied when the keys were written: attention does not care where a key sits.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class HoleyKVCache:
    """``DynamicCache`` plus ``valid`` (bool [B, T]): which cache columns each request may see."""

    def __init__(self, model, batch_size: int, device):
        self.cache = DynamicCache(config=model.config)
        bad = [type(layer).__name__ for layer in self.cache.layers if type(layer) is not DynamicLayer]
        if bad:
            raise ValueError(
                f"the reference decoder needs full-attention layers; {type(model).__name__} has {sorted(set(bad))}"
            )
        self.valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)  # [B, T]

    @property
    def seq_lens(self):
        """Committed KV entries per request, int64 [B] (= position of its next pending token)."""
        return self.valid.sum(1)

    def attention_mask(self, width: int, dtype):
        """Additive mask [B, 1, W, T + W] for a pass of ``width`` queries per request."""
        B, T = self.valid.shape
        dev = self.valid.device
        causal = torch.ones(width, width, dtype=torch.bool, device=dev).tril()  # [W, W]
        seen = torch.cat(
            [self.valid[:, None, None, :].expand(B, 1, width, T), causal.expand(B, 1, width, width)], dim=-1
        )
        mask = torch.zeros(seen.shape, dtype=dtype, device=dev)
        return mask.masked_fill_(~seen, torch.finfo(dtype).min)

    def commit(self, width: int, keep) -> None:
        """After a pass: of its ``width`` new columns, the first ``keep[b]`` stay valid."""
        new = torch.arange(width, device=self.valid.device) < keep[:, None].to(self.valid.device)
        self.valid = torch.cat([self.valid, new], dim=1)

    def select(self, rows) -> None:
        """Keep only the requests at ``rows`` (int64 [B'], in that order)."""
        self.cache.batch_select_indices(rows)
        self.valid = self.valid[rows]

    def compact(self, slack: int = 64) -> None:
        """Drop dead columns once they make up most of the cache (keeps per-pass cost bounded)."""
        B, T = self.valid.shape
        n = int(self.seq_lens.max()) if B else 0
        if B == 0 or T <= 2 * n + slack:
            return
        # Valid columns first, in their original order (stable sort), then cut to n.
        order = torch.sort((~self.valid).to(torch.uint8), dim=1, stable=True).indices[:, :n]  # [B, n]
        for layer in self.cache.layers:
            layer.keys, layer.values = (_gather_columns(x, order) for x in (layer.keys, layer.values))
        self.valid = self.valid.gather(1, order)


def _gather_columns(x, order):
    # x: [B, H, T, D]; order: [B, n] -> [B, H, n, D]
    B, H, _, D = x.shape
    idx = order.to(x.device)[:, None, :, None].expand(B, H, order.shape[1], D)
    return x.gather(2, idx)
