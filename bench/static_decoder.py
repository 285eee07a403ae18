"""A minimal decoder-only transformer (Llama / Qwen2 / Qwen3 layout) with a preallocated KV
cache, for timing one decode forward of W query tokens under CUDA graphs.

Why not transformers + StaticCache: its forward builds masks and cache positions on the
host, and whether that captures into a CUDA graph changes between versions; what is timed
here must be exactly "the model's GEMMs + attention over the cache" for a fixed shape.

Parameter names follow Hugging Face (``model.layers.0.self_attn.q_proj.weight`` ...), so an
HF state dict loads with ``load_state_dict`` (tests compare logits against transformers).
Attention: ``F.scaled_dot_product_attention`` with GQA, over cache positions
``[0, start + W)``; the W queries see the cache plus the earlier query tokens
(lower-right causal, i.e. query j sits at position ``start + j``). Only default RoPE is
implemented (RoPE scaling variants cost the same). Shapes are static for fixed
(batch, W, start), so one forward replays as one CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture fields; ``from_hf`` reads them from an HF ``config.json`` dict."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    qk_norm: bool = False          # Qwen3: RMSNorm on each head's q and k
    attention_bias: bool = False   # Qwen2: bias on q/k/v projections

    @staticmethod
    def from_hf(cfg: dict) -> "DecoderConfig":
        """From an HF config dict (Llama, Mistral, Qwen2, Qwen3 field names)."""
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in cfg]
        if missing:
            raise ValueError(f"config is missing field(s) {missing}")
        heads = cfg["num_attention_heads"]
        rope = cfg.get("rope_parameters") or {}
        kinds = {"qwen3": dict(qk_norm=True), "qwen2": dict(attention_bias=True)}
        extra = kinds.get(cfg.get("model_type"), {})
        return DecoderConfig(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads, num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=cfg.get("rope_theta") or rope.get("rope_theta", 10000.0),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qk_norm=extra.get("qk_norm", False),
            attention_bias=bool(cfg.get("attention_bias", extra.get("attention_bias", False))),
        )

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # float32 statistics, like the HF models (bf16 variance loses precision)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.c = c
        h, kv, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, h * d, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, kv * d, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, kv * d, bias=c.attention_bias)
        self.o_proj = nn.Linear(h * d, c.hidden_size, bias=False)
        self.expand_kv = False
        if c.qk_norm:
            self.q_norm = RMSNorm(d, c.rms_norm_eps)
            self.k_norm = RMSNorm(d, c.rms_norm_eps)

    def forward(self, x, cos, sin, cache: Tuple[torch.Tensor, torch.Tensor], start: int):
        b, w, _ = x.shape                                          # x: [B, W, hidden]
        c = self.c
        q = self.q_proj(x).view(b, w, c.num_attention_heads, c.head_dim)
        k = self.k_proj(x).view(b, w, c.num_key_value_heads, c.head_dim)
        v = self.v_proj(x).view(b, w, c.num_key_value_heads, c.head_dim)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rope(q, cos, sin).transpose(1, 2), rope(k, cos, sin).transpose(1, 2)  # [B, heads, W, D]
        k_cache, v_cache = cache                                   # [B, KVH, max_len, D]
        k_cache[:, :, start:start + w] = k
        v_cache[:, :, start:start + w] = v.transpose(1, 2)
        keys, values = k_cache[:, :, :start + w], v_cache[:, :, :start + w]
        # W = 1 sees everything; W > 1: query j at position start + j (lower-right causal).
        mask = None if w == 1 else causal_lower_right(w, start + w)
        if self.expand_kv:  # fallback for SDPA kernels without native GQA (copies the KV!)
            group = c.num_attention_heads // c.num_key_value_heads
            keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, w, -1))


def rope(x, cos, sin):
    """Rotary embedding, HF convention (rotate_half); x: [B, W, heads, D], cos/sin: [W, D]."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]


class MLP(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, cache, start):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class StaticDecoder(nn.Module):
    """``forward(input_ids [B, W], caches, start) -> logits [B, W, V]`` writing the W new
    tokens' KV at cache positions ``start .. start+W-1``."""

    def __init__(self, c: DecoderConfig, max_positions: int = 16384):
        super().__init__()
        self.config = c
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.model.layers = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))
        self.model.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.max_positions = max_positions
        self.reset_rope()

    def reset_rope(self) -> None:
        """(Re)compute the float32 RoPE tables [max_positions, D] on the weights' device
        (needed after ``to_empty``, which leaves buffers uninitialised)."""
        c, device = self.config, self.lm_head.weight.device
        if device.type == "meta":
            device = torch.device("cpu")
        f64 = dict(dtype=torch.float64, device=device)  # explicit: works inside torch.device("meta")
        inv_freq = 1.0 / c.rope_theta ** (torch.arange(0, c.head_dim, 2, **f64) / c.head_dim)
        freqs = torch.outer(torch.arange(self.max_positions, **f64), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_table", emb.cos().float(), persistent=False)   # [max_positions, D]
        self.register_buffer("sin_table", emb.sin().float(), persistent=False)

    def allocate_cache(self, batch: int, max_len: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (K, V), each [batch, KVH, max_len, D], on the model's device and dtype."""
        c, p = self.config, self.lm_head.weight
        shape = (batch, c.num_key_value_heads, max_len, c.head_dim)
        return [(torch.zeros(shape, device=p.device, dtype=p.dtype),
                 torch.zeros(shape, device=p.device, dtype=p.dtype)) for _ in range(c.num_hidden_layers)]

    def forward(self, input_ids, caches, start: int):
        w = input_ids.shape[1]
        dtype = self.lm_head.weight.dtype
        cos = self.cos_table[start:start + w].to(dtype)                # [W, D]
        sin = self.sin_table[start:start + w].to(dtype)
        x = self.model.embed_tokens(input_ids)
        for layer, cache in zip(self.model.layers, caches):
            x = layer(x, cos, sin, cache, start)
        return self.lm_head(self.model.norm(x))

    def set_expand_kv(self, expand: bool) -> None:
        """Attention with the KV heads repeated (instead of SDPA's native GQA)."""
        for layer in self.model.layers:
            layer.self_attn.expand_kv = expand

    def weight_bytes(self) -> int:
        """Bytes of all parameters (a tied embedding counted once)."""
        seen, total = set(), 0
        for p in self.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel() * p.element_size()
        return total
