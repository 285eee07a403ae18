"""Training-sequence layout for MTP self-distillation: regions, masks, positions, attention.

One ground-truth sequence x_0 .. x_{L-1} becomes one packed training sequence of at most N
tokens. At each region's prefix position i, k-1 mask tokens are inserted right after x_i;
the ground truth then continues with x_{i+1} ("replicated" after the masks: the masks stand
for these tokens), so later regions still see the true text. Position ids are the ORIGINAL
ones: mask j after x_i gets position i + j, and x_{i+j} keeps position i + j (positions
repeat, which is what RoPE must see at inference, where the masks sit at those positions).

Attention (``allowed[q, kv]``, True = q may attend to kv):
- a ground-truth token sees upstream ground truth only (it skips every mask span), so its
  row is exactly the plain causal model's row;
- a mask token sees upstream ground truth (up to and including its prefix x_i) plus the
  earlier masks of its own span (causal inside the span), never another span;
- padding sees only itself (a row with nothing to attend to would give NaN in SDPA).

Regions (paper defaults): M = N // (2 * k_max) regions, one every ``stride`` ground-truth
tokens (default k_max) starting at a random offset, each with its own k drawn uniformly in
[k_min, k_max] (k_min = 2; tests may use 1, a region without masks). Regions are placed only
at prefixes inside the supervised range (the response: prefix >= prompt_len - 1).
EOS rule: the first region whose predicted tokens x_{i+1} .. x_{i+k} reach EOS is the last
one; nothing after EOS is trained.

The "block" of a region is its k rows: the prefix row x_i (an ordinary next-token row)
followed by the k-1 mask rows; row j of the block predicts x_{i+1+j}.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

# Token kinds in a packed sequence.
PAD, TRUTH, MASK = 0, 1, 2


@dataclass
class Packed:
    """One packed sequence (python lists; :func:`collate` turns a list of them into tensors)."""

    input_ids: list = field(default_factory=list)     # [n]
    position_ids: list = field(default_factory=list)  # [n]
    kind: list = field(default_factory=list)          # [n] PAD / TRUTH / MASK
    span: list = field(default_factory=list)          # [n] region index of a block row, -1 otherwise
    block_j: list = field(default_factory=list)       # [n] row's index inside its block, -1 otherwise
    supervised: list = field(default_factory=list)    # [n] ground-truth row inside the response
    regions: list = field(default_factory=list)       # [(prefix i, k)] in order


def _region_prefixes(length, prompt_len, ends_with_eos, seq_len, k_max, stride, regions, rng,
                     offset=None):
    """Prefix indices of the candidate regions (random grid offset), capped at ``regions``."""
    lo = max(prompt_len - 1, 0)
    hi = length - 2 if ends_with_eos else length - 1  # a prefix must be a real token before EOS
    n_regions = regions if regions is not None else max(1, seq_len // (2 * k_max))
    stride = stride or k_max
    start = lo + (rng.randrange(stride) if offset is None else offset)
    return list(range(start, hi + 1, stride))[:n_regions]


def pack_sequence(ids, mask_token_id, *, prompt_len=0, eos_token_id=None, seq_len=160,
                  k_max=16, k_min=2, stride=None, regions=None, rng=None, ks=None,
                  offset=None) -> Packed:
    """Lay out one ground-truth sequence ``ids`` (list of ints) for MTP training.

    ``prompt_len`` tokens at the start are context only (no region predicts them).
    ``ks`` and ``offset`` optionally fix the block sizes and the grid offset (tests);
    otherwise they are drawn from ``rng`` (a ``random.Random``): k in [k_min, k_max], the
    offset in [0, stride). The result has at most ``seq_len``
    tokens; regions that do not fit are dropped.
    """
    if not 1 <= k_min <= k_max:
        raise ValueError(f"k_min/k_max must satisfy 1 <= k_min <= k_max, got {k_min}, {k_max}")
    if len(ids) == 0:
        raise ValueError("ids must be a non-empty token list")
    rng = rng or random.Random(0)
    ends_with_eos = eos_token_id is not None and ids[-1] == eos_token_id
    prefixes = _region_prefixes(len(ids), prompt_len, ends_with_eos, seq_len, k_max,
                                stride, regions, rng, offset)
    out = Packed()
    next_gt = 0  # next ground-truth index to append
    last_gt = len(ids) - 1
    for r, i in enumerate(prefixes):
        if ks is not None and r >= len(ks):
            break
        k = ks[r] if ks is not None else rng.randint(k_min, k_max)
        if len(out.input_ids) + (i + 1 - next_gt) + (k - 1) > seq_len:
            break
        _append_truth(out, ids, next_gt, i + 1, prompt_len)
        next_gt = i + 1
        region = len(out.regions)
        out.span[-1], out.block_j[-1] = region, 0  # the prefix row x_i is row 0 of the block
        for j in range(1, k):
            _append(out, mask_token_id, i + j, MASK, region, False, j)
        out.regions.append((i, k))
        if ends_with_eos and i + k >= last_gt:
            last_gt = i  # EOS rule: this region is the last; drop the truth after it
            break
    end = min(last_gt + 1, next_gt + seq_len - len(out.input_ids))
    _append_truth(out, ids, next_gt, end, prompt_len)
    return out


def _append(out, token, pos, kind, span, supervised, block_j=-1):
    out.input_ids.append(int(token))
    out.block_j.append(block_j)
    out.position_ids.append(int(pos))
    out.kind.append(kind)
    out.span.append(span)
    out.supervised.append(supervised)


def _append_truth(out, ids, start, end, prompt_len):
    # A truth row is "supervised" when it predicts a response token (used by the NTP term).
    for t in range(start, end):
        _append(out, ids[t], t, TRUTH, -1, t >= prompt_len - 1 and t + 1 < len(ids))


def attention_allowed(kind, span) -> torch.Tensor:
    """Boolean [n, n] matrix of the blocked causal pattern (see the module docstring).

    ``kind`` and ``span``: int tensors [n] (span = region id of block rows, -1 otherwise;
    mask tokens always carry their region id).
    """
    n = kind.shape[-1]
    idx = torch.arange(n, device=kind.device)
    causal = idx[None, :] <= idx[:, None]                         # [n, n]
    q_truth, k_truth = (kind == TRUTH)[:, None], (kind == TRUTH)[None, :]
    q_mask, k_mask = (kind == MASK)[:, None], (kind == MASK)[None, :]
    # A span is its prefix row plus its masks; a mask query may read its own span's masks.
    same_span = (span[:, None] == span[None, :]) & (span[:, None] >= 0)
    allowed = causal & ((k_truth & (q_truth | q_mask)) | (q_mask & k_mask & same_span))
    return allowed | torch.eye(n, dtype=torch.bool, device=kind.device)


@dataclass
class Batch:
    """A padded batch of packed sequences (all tensors [B, n] unless noted)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    kind: torch.Tensor
    span: torch.Tensor          # region id per block row, made unique across the batch; -1 else
    block_j: torch.Tensor       # row index inside its block (0 = prefix row), -1 else
    supervised: torch.Tensor    # bool
    allowed: torch.Tensor       # bool [B, n, n]
    n_regions: int

    @property
    def block_row(self) -> torch.Tensor:
        """Rows whose logits form a block (region prefix rows and mask rows)."""
        return self.span >= 0

    def to(self, device) -> "Batch":
        moved = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return Batch(**moved)


def collate(packed_list, pad_token_id=0) -> Batch:
    """Pad packed sequences to a common length and build the [B, n, n] attention pattern."""
    if not packed_list:
        raise ValueError("packed_list must not be empty")
    n = max(len(p.input_ids) for p in packed_list)
    rows = {name: [] for name in ("input_ids", "position_ids", "kind", "span", "block_j",
                                  "supervised")}
    offset = 0
    for p in packed_list:
        pad = n - len(p.input_ids)
        rows["input_ids"].append(p.input_ids + [pad_token_id] * pad)
        rows["position_ids"].append(p.position_ids + [0] * pad)
        rows["kind"].append(p.kind + [PAD] * pad)
        rows["span"].append([s + offset if s >= 0 else -1 for s in p.span] + [-1] * pad)
        rows["block_j"].append(p.block_j + [-1] * pad)
        rows["supervised"].append(p.supervised + [False] * pad)
        offset += len(p.regions)
    t = {k: torch.tensor(v, dtype=torch.bool if k == "supervised" else torch.long)
         for k, v in rows.items()}
    allowed = torch.stack([attention_allowed(kd, sp) for kd, sp in zip(t["kind"], t["span"])])
    return Batch(allowed=allowed, n_regions=offset, **t)


def hf_attention_mask(allowed, model, dtype=None) -> torch.Tensor:
    """The pattern as a 4-D mask an HF model uses as-is: [B, 1, n, n].

    SDPA takes a boolean mask (True = attend); eager attention adds the mask to the scores,
    so it gets an additive float mask (0 or the dtype's minimum). Kernels that cannot take
    an arbitrary mask (flash-attention) are refused: the blocked pattern is not causal.
    """
    impl = getattr(model.config, "_attn_implementation", None) or "sdpa"
    mask = allowed[:, None, :, :]
    if impl == "sdpa":
        return mask
    if impl != "eager":
        raise ValueError(f"MTP training needs attn_implementation 'sdpa' or 'eager' (the "
                         f"blocked mask is not causal); the model uses {impl!r}")
    dtype = dtype or next(model.parameters()).dtype
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


def render_pattern(packed: Packed, names=None) -> str:
    """Text picture of one packed sequence's attention pattern (tests, debugging)."""
    t = collate([packed])
    allowed = t.allowed[0]
    labels = []
    for tok, pos, kd in zip(packed.input_ids, packed.position_ids, packed.kind):
        name = "M" if kd == MASK else (names[tok] if names else str(tok))
        labels.append(f"{name}@{pos}")
    width = max(len(s) for s in labels)
    lines = [f"{lab:>{width}} " + "".join("x" if a else "." for a in row.tolist())
             for lab, row in zip(labels, allowed)]
    return "\n".join(lines)
