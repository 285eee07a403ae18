"""The real-model recipe's plumbing (``sglang-mtp smollm2``) on a tiny random Llama with a
chat template: prompts, self-distillation set, training, table, learning curve, caching."""

import json
import os

import pytest

from sglang_mtp.recipe.prompts import HELD_OUT_TOPICS, TOPICS, make_prompts
from sglang_mtp.recipe.pipeline import RecipeConfig
from tests.models import save_checkpoint, tiny_model, tiny_tokenizer

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")
QUICK = ["--n-train", "6", "--n-eval", "3", "--answer-tokens", "6", "--steps", "4",
         "--warmup-steps", "1", "--batch-size", "2", "--seq-len", "64", "--k-max", "3",
         "--save-every", "2", "--eval-k-max", "3", "--eval-tokens", "6", "--no-progress"]


def test_prompts_are_deterministic_and_held_out_topics_are_unseen():
    train, held = make_prompts(200, 30, seed=1)
    assert (train, held) == make_prompts(200, 30, seed=1)
    assert len(train) == 200 and len(held) == 30 and not set(train) & set(held)
    assert not set(TOPICS) & set(HELD_OUT_TOPICS)
    for p in train:
        assert not any(t in p for t in HELD_OUT_TOPICS), p


def test_stage_keys_track_their_upstream():
    base = RecipeConfig().stage_keys()
    more = RecipeConfig()
    more.mtp.steps += 1
    k = more.stage_keys()
    assert k["data"] == base["data"] and k["mtp"] != base["mtp"] and k["eval"] != base["eval"]
    assert RecipeConfig(n_train=7).stage_keys()["mtp"] != base["mtp"]


@pytest.fixture
def chat_model(tmp_path):
    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    return str(save_checkpoint(tmp_path / "src", tiny_model(), tok))


def test_recipe_builds_caches_and_reports(chat_model, tmp_path, capsys):
    from sglang_mtp.recipe.cli import recipe_main
    from sglang_mtp.recipe.distill import read_records

    cache = tmp_path / "cache"
    assert recipe_main(["--source", chat_model, "--cache-dir", str(cache)] + QUICK) == 0
    out = capsys.readouterr().out
    assert out.count("| mtp |") == 7 and out.count("| teacher | ntp |") == 1
    records = read_records(cache / "data" / "data.jsonl")
    assert len(records) == 6 and all(r["answer_ids"] for r in records)
    assert json.load(open(cache / "mtp" / "config.json"))["mtp_trained"] is True
    rows = json.load(open(cache / "eval" / "results.json"))
    verify = [r for r in rows if r["strategy"] == "verify:3"][0]
    assert verify["same_as_teacher"] is not None and verify["same_as_own_greedy"] == 1.0
    curve = json.load(open(cache / "eval" / "curve.json"))
    assert sorted({p["step"] for p in curve}) == [0, 2, 4]
    assert {p["strategy"] for p in curve} == {"verify:3", "conf_adapt:0.9:3"}
    assert curve[0]["effective_k"] >= 1.0 and "| 2 |" in out
    for png in ("pareto.png", "pareto_own.png", "curve.png"):
        assert os.path.getsize(cache / "eval" / png) > 1000
    assert recipe_main(["--source", chat_model, "--cache-dir", str(cache)] + QUICK) == 0
    assert "converted cached, data cached, mtp cached, eval cached" in capsys.readouterr().out


def test_adapted_model_names_the_command_that_builds_it(tmp_path):
    from sglang_mtp.recipe import adapted_model

    with pytest.raises(FileNotFoundError, match="sglang-mtp smollm2"):
        adapted_model(str(tmp_path))
