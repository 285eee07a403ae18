"""Load-adaptive block width: how wide each decode forward is, given how many requests share it.

A decode forward carries W query tokens per request (pending tokens, then masks). W costs
almost nothing while batch * W is small and a lot once the forward turns compute-bound, so
the width follows the load:

- the allowed widths are 1, 3, 7, 15, ... below ``2 * k_max - 1``, plus ``2 * k_max - 1``;
- a step's *target* width is the widest allowed one that the policy grants the batch size
  (a query-token budget: ``batch * W <= budget``; or a table of (max batch, width) rows);
- every request's block this step is capped at ``cap = (target + 1) // 2`` tokens
  (:func:`step_cap`), which is what makes lossy output depend on the load: the reference
  decoder takes the same policy (``decode.generate(width_policy=...)``). A request whose first
  block is capped at 1 decodes plainly from its prefill's token on: no mask rides its prefill
  and no step re-feeds its last prompt token, so a batch at cap 1 runs at width 1;
- the forward itself is the narrowest allowed width that holds every request's pending
  tokens plus its capped block (:meth:`WidthPolicy.step_width`). That is the target when the
  cap holds still; after the cap drops, one step is still wider while the previous, longer
  blocks are fed back; a batch of plain (k = 1) requests runs at width 1.

``budget == 0`` is today's fixed width ``2 * k_max - 1`` (no cap). verify output never
depends on the width (only its speed does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


def allowed_widths(k_max: int) -> Tuple[int, ...]:
    """1, 3, 7, 15, ... below 2*k_max-1, then 2*k_max-1 (the widest block's width)."""
    top = 2 * k_max - 1
    widths, w = [], 1
    while w < top:
        widths.append(w)
        w = 2 * w + 1
    return tuple(widths) + (top,)


@dataclass(frozen=True)
class WidthPolicy:
    """Target width per batch size. ``budget``: query tokens per forward (0 = fixed width);
    ``table``: (max_batch, width) rows from a calibration, used instead of the budget."""

    k_max: int
    budget: int = 0
    table: Optional[Tuple[Tuple[int, int], ...]] = None

    def __post_init__(self):
        if self.k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {self.k_max}")
        if self.budget < 0:
            raise ValueError(f"the token budget must be >= 0 (0 = fixed width), got {self.budget}")
        if self.table is not None:
            widths = allowed_widths(self.k_max)
            for max_batch, w in self.table:
                if w not in widths or max_batch < 1:
                    raise ValueError(f"bad width table row ({max_batch}, {w}); widths must be in {widths}")

    @property
    def adaptive(self) -> bool:
        return self.budget > 0 or self.table is not None

    @property
    def widths(self) -> Tuple[int, ...]:
        return allowed_widths(self.k_max)

    def target(self, batch_size: int) -> int:
        """The widest allowed width this batch size is granted (1 when none fits)."""
        widths = self.widths
        if not self.adaptive:
            return widths[-1]
        if self.table is not None:
            fits = [w for max_batch, w in self.table if batch_size <= max_batch]
            return max(fits, default=1)
        fits = [w for w in widths if batch_size * w <= self.budget]
        return max(fits, default=1)

    def cap(self, batch_size: int) -> int:
        """Block-size cap of every request at this batch size."""
        return (self.target(batch_size) + 1) // 2

    def step_width(self, need: int) -> int:
        """The forward's width: the narrowest allowed one >= ``need`` (the batch's widest
        pending tokens + capped block - 1)."""
        return narrowest(self.widths, need)

    def describe(self) -> str:
        """One log line: the target width at a few batch sizes."""
        if not self.adaptive:
            return f"fixed width {self.widths[-1]}"
        sizes = (1, 2, 4, 8, 16, 32, 64, 128, 256)
        source = f"budget {self.budget} tokens" if self.table is None else "calibrated"
        return f"{source}: " + ", ".join(f"B={b}: W={self.target(b)}" for b in sizes)


def narrowest(widths, need: int) -> int:
    """The narrowest of the ascending ``widths`` that is >= ``need`` (else the widest)."""
    return next((w for w in widths if w >= need), widths[-1])


def step_cap(k: int, cap: int) -> int:
    """A request's block size in a step with block cap ``cap`` (k = its strategy's k): the
    fused ops' ``step_k`` (``csrc/mtp_step_rule.h``), which also caps by the width.

    The first block (the prefill's, or the first decode step's where masks cannot ride the
    prefill) follows the same rule. A first decode step re-feeds the last prompt token, whose
    row re-predicts t1, so it needs 2 rows; at cap 1 the worker instead starts the request
    from t1 as a plain one (``MTPState.start_plain``), and the reference decoder's first pass
    then emits t1 alone, as a prefill does."""
    return max(1, min(k, cap))


class AutoWidthPolicy:
    """``--mtp-token-budget auto``: per batch size, the width that maximises tokens per second.

    ``costs[b][w]``: measured seconds of a decode forward of ``b`` requests at width ``w``
    (:mod:`sglang_mtp.sglang_plugin.calibrate`, at start-up). Tokens per request-step under
    each cap start optimistic (every block fully accepted) and follow the server's own accept
    counts (:meth:`observe`, an exponential average), so a cap that does not pay is dropped
    after it was tried. Lossy output then depends on timing, not only on the load.
    ``max_tokens``: no forward of more query rows is chosen, at any batch size (the calibration's
    bound, which on a GPU is the rows of the graphs' logits buffer): batch sizes past the largest
    measured one reuse its costs, where a width that fit may not fit any more.
    """

    adaptive = True

    def __init__(self, k_max: int, costs, decay: float = 0.9, max_tokens: Optional[int] = None):
        self.k_max = k_max
        self.max_tokens = max_tokens
        self.widths = allowed_widths(k_max)
        self.sizes = sorted(costs)
        if not self.sizes or any(set(costs[b]) != set(self.widths) for b in self.sizes):
            raise ValueError(f"costs must give every width {self.widths} at each batch size")
        self.costs = {b: dict(costs[b]) for b in self.sizes}
        self.tokens = {(w + 1) // 2: float((w + 1) // 2) for w in self.widths}
        self.decay = decay

    def _size(self, batch_size: int) -> int:
        for b in self.sizes:
            if b >= batch_size:
                return b
        return self.sizes[-1]

    def target(self, batch_size: int) -> int:
        cost = self.costs[self._size(batch_size)]
        fits = [w for w in self.widths if w == 1 or self.max_tokens is None or batch_size * w <= self.max_tokens]
        return max(fits, key=lambda w: (self.tokens[(w + 1) // 2] / cost[w], -w))

    def cap(self, batch_size: int) -> int:
        return (self.target(batch_size) + 1) // 2

    def step_width(self, need: int) -> int:
        return narrowest(self.widths, need)

    def observe(self, cap: int, tokens_per_request) -> None:
        """A step under ``cap`` emitted ``tokens_per_request`` (host ints, one per request)."""
        if cap in self.tokens and len(tokens_per_request):
            mean = sum(tokens_per_request) / len(tokens_per_request)
            self.tokens[cap] = self.decay * self.tokens[cap] + (1 - self.decay) * mean

    def describe(self) -> str:
        table = ", ".join(f"B={b}: W={self.target(b)}" for b in self.sizes)
        costs = "; ".join(f"B={b}: " + " ".join(f"W{w}={1e3 * c:.2f}ms" for w, c in self.costs[b].items())
                          for b in self.sizes)
        return f"calibrated: {table} (forward times {costs})"
