"""Tiny random Hugging Face models and a tiny offline tokenizer, for tests.

Nothing is downloaded: every model is built from a config with seeded random weights, small
enough that a forward pass costs well under a millisecond on one CPU core. Reuse these in any
test that needs a causal LM:

    from tests.models import tiny_model, tiny_tokenizer, tiny_mtp_model, save_checkpoint

    model = tiny_model("llama")                  # LlamaForCausalLM, float32, eval mode
    model = tiny_model("qwen2", tie=True)        # Qwen2ForCausalLM with tied embeddings
    model, mask_id = tiny_mtp_model("llama")     # same, plus the <MTP> token (convert.py)
    tok = tiny_tokenizer()                       # character-level PreTrainedTokenizerFast
    path = save_checkpoint(tmp_path / "m", model, tok)   # AutoModel/AutoTokenizer loadable

Models: hidden 64, 2 layers, 4 heads, 2 KV heads, ``max_position_embeddings`` 256. The
un-embedding is rescaled (``logit_scale``) so next-token distributions are peaked and spread
over (0, 1) like a real LM's, instead of the near-uniform softmax of a 0.02-std init: that
makes confidence thresholds and greedy ties behave realistically. ``vocab_size`` defaults to
the tokenizer's size plus 4 spare rows (like real checkpoints whose embedding is padded).
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list(string.ascii_letters + string.digits + string.punctuation + " \n")
TOKENIZER_SIZE = len(SPECIALS) + len(CHARS)  # 100
EOS_ID = 2
KINDS = ("llama", "qwen2")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: ids 0-3 are <pad> <s> </s> <unk>, then one id per
    printable ASCII character (plus space and newline); anything else is <unk>.

    It is a byte-level BPE without merges, so it round-trips text identically whether
    ``AutoTokenizer`` loads it back as a generic fast tokenizer (Llama checkpoints) or as
    ``Qwen2Tokenizer`` (transformers 5 forces that class for Qwen2 checkpoints).
    """
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    mapped = [byte_level.pre_tokenize_str(c)[0][0] for c in CHARS]  # " " -> "\u0120", ...
    vocab = {t: i for i, t in enumerate(SPECIALS + mapped)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def tiny_config(kind: str = "llama", vocab_size: int = TOKENIZER_SIZE + 4, tie: bool = False, **overrides):
    """A LlamaConfig or Qwen2Config for a 2-layer, 64-wide model (keyword overrides win)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    fields = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=tie, bos_token_id=1, eos_token_id=EOS_ID, pad_token_id=0,
    )
    fields.update(overrides)
    return (LlamaConfig if kind == "llama" else Qwen2Config)(**fields)


def tiny_model(kind: str = "llama", seed: int = 0, vocab_size: int = TOKENIZER_SIZE + 4, tie: bool = False,
               logit_scale: float = 20.0, attn: str = "sdpa", **overrides):
    """A seeded random float32 causal LM in eval mode (see the module docstring)."""
    config = tiny_config(kind, vocab_size, tie, **overrides)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    cls = LlamaForCausalLM if kind == "llama" else Qwen2ForCausalLM
    model = cls(config).eval()
    with torch.no_grad():
        # Peaked logits; for tied weights this also scales the input embedding, which the
        # first RMSNorm undoes, so the effect is the same.
        model.get_output_embeddings().weight.mul_(logit_scale)
    return model


def tiny_mtp_model(kind: str = "llama", seed: int = 0, trained: bool = True, **kwargs):
    """``tiny_model`` plus the <MTP> mask token; returns ``(model, mask_token_id)``.

    ``trained=True`` marks the config as MTP-trained (random weights, but it keeps decode
    paths from warning in tests that are not about that warning).
    """
    from sglang_mtp.convert import add_mask_token

    model = tiny_model(kind, seed, **kwargs)
    mask_id = add_mask_token(model, seed=seed)
    model.config.mtp_trained = trained
    return model, mask_id


def save_checkpoint(path, model, tokenizer=None) -> Path:
    """Save ``model`` (and ``tokenizer``, default: ``tiny_tokenizer()``) as an HF checkpoint."""
    path = Path(path)
    model.save_pretrained(path)
    (tokenizer if tokenizer is not None else tiny_tokenizer()).save_pretrained(path)
    return path


def random_prompts(n: int, seed: int = 0, min_len: int = 3, max_len: int = 12, vocab: int = TOKENIZER_SIZE):
    """``n`` seeded random prompts (lists of ids in [4, vocab)), lengths in [min_len, max_len]."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
    return [torch.randint(len(SPECIALS), vocab, (n_,), generator=g).tolist() for n_ in lens]


def hf_greedy(model, prompt, max_new_tokens: int, mask_token_id=None, stop_token_ids=None):
    """Plain ``model.generate(do_sample=False)`` continuation of one prompt (list of ids),
    with the mask token suppressed; stops at ``stop_token_ids`` (default: the model's EOS)."""
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    if mask_token_id is not None:
        kwargs["suppress_tokens"] = [mask_token_id]
    if stop_token_ids is not None:
        kwargs["eos_token_id"] = list(stop_token_ids) or None
    x = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), **kwargs)
    return out[0, len(prompt):].tolist()
