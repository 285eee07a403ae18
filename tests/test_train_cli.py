"""``sglang-mtp train`` on checkpoints: data loading, checkpoints, exact resume, errors."""

import json

import pytest
import torch

from sglang_mtp.convert import convert_checkpoint
from sglang_mtp.train.cli import train_main
from sglang_mtp.train.data import encode_example, load_examples
from tests.models import save_checkpoint, tiny_model, tiny_tokenizer

ARGS = ["--steps", "4", "--batch-size", "2", "--seq-len", "48", "--k-max", "4", "--lr", "1e-3",
        "--warmup-steps", "1", "--save-every", "2", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    save_checkpoint(root / "base", tiny_model("llama"))
    convert_checkpoint(str(root / "base"), str(root / "mtp0"))
    data = root / "data.jsonl"
    with open(data, "w") as f:
        for i in range(6):
            f.write(json.dumps({"prompt": f"What is {i} + {i}?",
                                "response": f" {i} + {i} = {2 * i}. Done."}) + "\n")
    return root


def _weights(path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_train_writes_marked_checkpoints_and_resumes_exactly(converted, tmp_path):
    base = ["--model", str(converted / "mtp0"), "--data", str(converted / "data.jsonl")]
    assert train_main(base + ["--out", str(tmp_path / "a")] + ARGS) == 0
    for path in (tmp_path / "a", tmp_path / "a" / "checkpoint-2"):
        config = json.load(open(path / "config.json"))
        assert config["mtp_trained"] is True and "mtp_mask_token_id" in config
        assert (path / "trainer_state.json").exists() and (path / "optimizer.pt").exists()
    log = [json.loads(line) for line in open(tmp_path / "a" / "train_log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    # resume from step 2 in another directory: same final weights as the straight run
    assert train_main(base + ["--out", str(tmp_path / "b"), "--resume",
                              str(tmp_path / "a" / "checkpoint-2")] + ARGS) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = _weights(converted / "mtp0")
    assert not torch.equal(a["lm_head.weight"], start["lm_head.weight"])
    state = json.load(open(tmp_path / "b" / "trainer_state.json"))
    assert state["step"] == 4 and state["teacher"].endswith("mtp0")


def test_unconverted_checkpoint_is_refused(converted, tmp_path):
    with pytest.raises(ValueError, match="mask"):
        train_main(["--model", str(converted / "base"), "--data", str(converted / "data.jsonl"),
                    "--out", str(tmp_path / "x")] + ARGS)


def test_loader_reads_jsonl_and_text(converted, tmp_path):
    tok = tiny_tokenizer()
    examples = load_examples(str(converted / "data.jsonl"), tok)
    assert len(examples) == 6
    e = examples[1]
    assert e.ids[e.prompt_len:] == tok(" 1 + 1 = 2. Done.", add_special_tokens=False)["input_ids"] \
        + [tok.eos_token_id]
    text = tmp_path / "t.txt"
    text.write_text("first line\n\nsecond line\n")
    plain = load_examples(str(text), tok)
    assert len(plain) == 2 and plain[0].prompt_len == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_examples(str(bad), tok)
    with pytest.raises(ValueError, match="does not exist"):
        load_examples(str(tmp_path / "missing.jsonl"), tok)


def test_chat_template_wraps_the_prompt():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="chat template"):
        encode_example(tok, "hi", "yo", chat_template=True)
    tok.chat_template = ("{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
                         "{% if add_generation_prompt %}>{% endif %}")
    e = encode_example(tok, "hi", "yo", chat_template=True)
    assert tok.decode(e.ids[:e.prompt_len]) == "[hi]>"
    assert tok.decode(e.ids[e.prompt_len:], skip_special_tokens=True) == "yo"


def test_bad_config_is_named(converted, tmp_path):
    with pytest.raises(ValueError, match="k_min"):
        train_main(["--model", str(converted / "mtp0"), "--data", str(converted / "data.jsonl"),
                    "--out", str(tmp_path / "x"), "--k-min", "9"] + ARGS)
