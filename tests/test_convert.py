"""sglang_mtp.convert: the <MTP> mask token in the tokenizer, the embeddings and the config."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaModel

from sglang_mtp.convert import (
    MASK_TOKEN, add_mask_token, convert_checkpoint, is_mtp_trained, resolve_mask_token_id,
)
from tests.models import TOKENIZER_SIZE, save_checkpoint, tiny_config, tiny_model, tiny_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")


def weights(model):
    return model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("vocab_size,with_tokenizer", [(TOKENIZER_SIZE, True), (TOKENIZER_SIZE + 4, True),
                                                       (TOKENIZER_SIZE + 4, False)])
def test_add_mask_token(kind, tie, vocab_size, with_tokenizer):
    model = tiny_model(kind, tie=tie, vocab_size=vocab_size)
    tok = tiny_tokenizer() if with_tokenizer else None
    old_in, old_out = (w.detach().clone() for w in weights(model))
    prompt = torch.tensor([[5, 9, 30, 41, 7]])
    old_logits = model(prompt).logits

    mask_id = add_mask_token(model, tok, seed=3)

    # The tokenizer's first free id (a spare padded row, or a new row), else a new row.
    assert mask_id == (TOKENIZER_SIZE if with_tokenizer else vocab_size)
    w_in, w_out = weights(model)
    assert w_in.shape[0] == max(vocab_size, mask_id + 1) == model.config.vocab_size
    assert (w_in.data_ptr() == w_out.data_ptr()) == tie
    n = min(vocab_size, mask_id)
    assert torch.equal(w_in[:n], old_in[:n]) and torch.equal(w_out[:n], old_out[:n])
    for new, old in ((w_in, old_in), (w_out, old_out)):
        z = (new[mask_id] - old[:n].mean(0)) / old[:n].std(0)  # drawn from N(mean, var) per dim
        assert abs(float(z.mean())) < 0.5 and 0.6 < float(z.std()) < 1.5
    assert model.config.mtp_mask_token_id == mask_id and model.config.mtp_trained is False
    if tok is not None:
        assert tok("a" + MASK_TOKEN + "b")["input_ids"] == [4, mask_id, 5]
    # Predictions over the original vocabulary are untouched.
    assert torch.allclose(model(prompt).logits[..., :n], old_logits[..., :n], atol=1e-5)

    before = [w.detach().clone() for w in weights(model)]
    assert add_mask_token(model, tok, seed=99) == mask_id  # idempotent
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))


def test_mask_rows_are_seeded():
    rows = []
    for seed in (0, 0, 1):
        model = tiny_model("llama")
        mask_id = add_mask_token(model, seed=seed)
        rows.append(model.get_input_embeddings().weight[mask_id].detach().clone())
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])


def test_model_that_cannot_be_extended():
    with pytest.raises(ValueError, match="no output .un-embedding. matrix"):
        add_mask_token(LlamaModel(tiny_config("llama")))


def test_existing_mask_id_must_agree_with_tokenizer():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    add_mask_token(model, tok)
    model.config.mtp_mask_token_id = 3
    with pytest.raises(ValueError, match="tokenizer maps <MTP> to 100"):
        add_mask_token(model, tok)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_convert_checkpoint_round_trip(tmp_path, kind):
    src = save_checkpoint(tmp_path / "src", tiny_model(kind), tiny_tokenizer())
    mask_id = convert_checkpoint(src, tmp_path / "dst", seed=0)
    assert mask_id == TOKENIZER_SIZE
    config = AutoConfig.from_pretrained(tmp_path / "dst")
    assert config.mtp_mask_token_id == mask_id and not is_mtp_trained(config)
    assert resolve_mask_token_id(tmp_path / "dst") == mask_id
    tok = AutoTokenizer.from_pretrained(tmp_path / "dst")
    assert tok.convert_tokens_to_ids(MASK_TOKEN) == mask_id
    assert tok.decode(tok("x = 1 + 2")["input_ids"]) == "x = 1 + 2"
    assert "mtp_mask_token_id" not in AutoConfig.from_pretrained(src).to_dict()  # source untouched

    # Converting a converted checkpoint changes nothing.
    assert convert_checkpoint(tmp_path / "dst", tmp_path / "again", seed=5) == mask_id
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "dst").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "again").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_convert_checkpoint_without_tokenizer(tmp_path):
    tiny_model("llama", vocab_size=TOKENIZER_SIZE).save_pretrained(tmp_path / "src")
    assert convert_checkpoint(tmp_path / "src", tmp_path / "dst") == TOKENIZER_SIZE
    assert AutoConfig.from_pretrained(tmp_path / "dst").vocab_size == TOKENIZER_SIZE + 1


def test_convert_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        convert_checkpoint(tmp_path / "nope", tmp_path / "dst")


def test_resolve_mask_token_id():
    model = tiny_model("llama")
    model.config._name_or_path = "my/ckpt"
    with pytest.raises(ValueError, match="'my/ckpt' has no <MTP> mask token"):
        resolve_mask_token_id(model)
    assert resolve_mask_token_id(model, explicit=50) == 50
    with pytest.raises(ValueError, match="mask_token_id 104 is outside the vocabulary"):
        resolve_mask_token_id(model.config, explicit=104)
    tok = tiny_tokenizer()
    tok.add_special_tokens({"extra_special_tokens": [MASK_TOKEN]})
    assert resolve_mask_token_id(model, tokenizer=tok) == TOKENIZER_SIZE  # tokenizer fallback
    add_mask_token(model)
    assert resolve_mask_token_id(model) == resolve_mask_token_id(model.config) == 104


def test_is_mtp_trained():
    model = tiny_model("llama")
    assert not is_mtp_trained(model)
    add_mask_token(model)
    assert not is_mtp_trained(model)
    model.config.mtp_trained = True
    assert is_mtp_trained(model) and is_mtp_trained(model.config)
