"""The CPU toy: data, tokenizer, plot, and a smoke run of the cached pipeline (tiny steps)."""

import json
import os

import pytest

from sglang_mtp.toy.data import GAIN, Problem, corpus_text, make_splits, parse_answer
from sglang_mtp.toy.pipeline import ToyConfig, run_pipeline, stage_keys
from sglang_mtp.plot import pareto_png
from sglang_mtp.toy.tokenizer import build_tokenizer


def test_splits_are_deterministic_disjoint_and_correct():
    train, held = make_splits(2000, 50, seed=3)
    assert (train, held) == make_splits(2000, 50, seed=3)
    assert make_splits(2000, 50, seed=4)[1] != held
    assert not set(train) & set(held) and len(set(held)) == 50
    for p in held:
        assert parse_answer(p.response) == p.answer
        assert p.answer == (p.a + p.b if p.verb in GAIN else p.a - p.b) and p.answer > 0
    p = Problem("Ann", "shells", "sells", 47, 8)
    assert p.response == " Ann has 47 shells. Ann sells 8, so 47 - 8 = 39. The answer is 39."
    assert parse_answer("no answer here") is None


def test_two_step_problems_chain_their_results():
    train, held = make_splits(500, 40, seed=2, two_step=0.5)
    two = [p for p in train + held if p.verb2]
    assert 0.3 < len(two) / len(train + held) < 0.7
    for p in two:
        assert p.answer > 0 and f"so {p.first} " in p.response
        assert parse_answer(p.response) == p.answer and p.verb2 in p.prompt
    assert make_splits(500, 40, seed=2)[1] == make_splits(500, 40, seed=2, two_step=0.0)[1]


def test_tokenizer_round_trips_and_spells_numbers_by_digit(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer(corpus_text())
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for p in make_splits(200, 20, seed=1, two_step=0.5)[0]:
        text = p.prompt + p.response
        ids = loaded(text)["input_ids"]
        assert ids[0] == loaded.bos_token_id and loaded.unk_token_id not in ids
        assert loaded.decode(ids, skip_special_tokens=True) == text
    assert tok.convert_ids_to_tokens(tok(" 108", add_special_tokens=False)["input_ids"]) == \
        [" 1", "0", "8"]
    assert len(tok) < 100


def test_pareto_png_draws_all_series(tmp_path):
    from PIL import Image

    rows = [{"model": "teacher", "strategy": "ntp", "accuracy": 0.8, "effective_k": 1.0}]
    rows += [{"model": "mtp", "strategy": f"static:{k}", "accuracy": 0.8 - 0.1 * k,
              "effective_k": float(k)} for k in (1, 2, 4)]
    rows += [{"model": "mtp", "strategy": "conf_adapt:0.9:8", "accuracy": 0.78,
              "effective_k": 2.7}]
    path = pareto_png(rows, tmp_path / "p.png")
    img = Image.open(path)
    assert img.size == (720, 480)
    colors = {c for _, c in img.getcolors(1 << 16)}
    assert (214, 39, 40) in colors and (31, 119, 180) in colors  # static and conf_adapt drawn


def test_stage_keys_track_their_upstream():
    base = stage_keys(ToyConfig())
    more_mtp = ToyConfig()
    more_mtp.mtp.steps += 1
    k = stage_keys(more_mtp)
    assert k["teacher"] == base["teacher"] and k["converted"] == base["converted"]
    assert k["mtp"] != base["mtp"] and k["eval"] != base["eval"]
    assert stage_keys(ToyConfig(teacher_steps=1))["mtp"] != base["mtp"]


def test_quick_pipeline_builds_caches_and_reports(tmp_path, capsys):
    from sglang_mtp.toy.cli import toy_main

    assert toy_main(["--quick", "--cache-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("| mtp |") == 11 and out.count("| teacher |") == 2
    with open(tmp_path / "mtp" / "config.json") as f:
        config = json.load(f)
    assert config["mtp_trained"] is True and isinstance(config["mtp_mask_token_id"], int)
    with open(tmp_path / "converted" / "config.json") as f:
        assert json.load(f)["mtp_trained"] is False
    rows = json.load(open(tmp_path / "eval" / "results.json"))
    verify = [r for r in rows if r["strategy"].startswith("verify")][0]
    assert verify["same_as_own_greedy"] == 1.0  # lossless: equals the MTP model's greedy
    assert os.path.getsize(tmp_path / "eval" / "pareto.png") > 1000
    # second run: every stage comes from the cache
    report = run_pipeline(ToyConfig.quick(), str(tmp_path), log=None)
    assert all(report["cached"].values())


def test_bad_force_stage_is_named(tmp_path):
    from sglang_mtp.toy.cli import toy_main

    with pytest.raises(ValueError, match="--force"):
        toy_main(["--quick", "--cache-dir", str(tmp_path), "--force", "bogus"])
