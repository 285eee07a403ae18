"""Held-out validation during MTP training and checkpoint selection (API and CLI)."""

import json

import pytest
import torch

from sglang_mtp.convert import convert_checkpoint
from sglang_mtp.train import TrainConfig, frozen_teacher, train
from sglang_mtp.train.cli import train_main
from sglang_mtp.train.data import encode_example
from sglang_mtp.train.validate import KeepBest, Validation, teacher_reference, validate
from tests.models import random_prompts, save_checkpoint, tiny_model, tiny_mtp_model, tiny_tokenizer


def _examples(tok, n=8):
    return [encode_example(tok, f"What is {i} + {i}?", f" {i} + {i} = {2 * i}. Done.") for i in range(n)]


def test_keep_best_picks_the_fastest_evaluation_above_the_floor():
    keep = KeepBest.parse(" conf_adapt:0.9 , agreement>=0.95 ")
    evs = [(0, 1.0, 1.0), (10, 1.8, 0.97), (20, 2.6, 0.90), (30, 2.2, 0.96), (40, 1.5, 1.0)]
    chosen = [step for step, k, a in evs
              if keep.offer(step, {"conf_adapt:0.9": {"effective_k": k, "agreement": a}})]
    assert chosen == [0, 10, 30] and keep.best["step"] == 30
    assert "kept step 30" in keep.reason() and "2.20" in keep.reason()
    with pytest.raises(ValueError, match="not evaluated"):
        keep.offer(50, {"verify": {"effective_k": 1.0, "agreement": 1.0}})
    for bad in ("conf_adapt:0.9", "verify, agreement>0.9", "verify, speed>=1", "verify, agreement>=1.5"):
        with pytest.raises(ValueError, match="keep-best"):
            KeepBest.parse(bad)
    never = KeepBest.parse("verify, agreement>=1")
    assert not never.offer(0, {"verify": {"effective_k": 3.0, "agreement": 0.5}})
    assert "no evaluation reached" in never.reason()


def test_validation_reports_what_training_did_to_held_out_prompts(tmp_path, one_thread):
    torch.manual_seed(0)
    student, mask_id = tiny_mtp_model(trained=False)
    teacher = frozen_teacher(student)
    tok = tiny_tokenizer()
    val = Validation(random_prompts(6, seed=1), max_new_tokens=12, stop_token_ids=(),
                     strategies=("conf_adapt:0.9", "verify", "static:2"))
    teacher_reference(teacher, val)
    before = validate(student, val, k_max=4)
    assert before["plain"]["agreement"] == 1.0 and before["plain"]["token_agreement"] == 1.0  # the same weights
    assert before["verify"]["agreement"] == 1.0  # lossless, whatever the training did
    assert set(before) == {"plain", "conf_adapt:0.9", "verify", "static:2"}
    assert before["static:2"]["effective_k"] == pytest.approx(12 / 6)
    # An aggressive run (lr 3e-2) damages the student's own greedy output; the log shows it.
    cfg = TrainConfig(steps=6, lr=3e-2, warmup_steps=0, batch_size=4, seq_len=48, k_max=4, log_every=0)
    keep = KeepBest.parse("plain, agreement>=1.0")
    train(student, teacher, _examples(tok), cfg, mask_token_id=mask_id, eos_token_id=tok.eos_token_id,
          out_dir=str(tmp_path), tokenizer=tok, progress=False, validation=val, eval_every=3, keep_best=keep)
    assert [h["step"] for h in val.history] == [0, 3, 6]
    assert val.history[0]["eval"] == before
    assert val.history[-1]["eval"]["plain"]["token_agreement"] < 1.0
    log = [json.loads(line) for line in open(tmp_path / "train_log.jsonl")]
    assert [r["step"] for r in log if "eval" in r] == [0, 3, 6]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 7))
    assert (tmp_path / "validation.png").stat().st_size > 0
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["best"]["step"] == 0 and "kept step 0" in best["reason"]
    assert (tmp_path / "best" / "config.json").exists()


def test_verify_stays_identical_to_the_students_own_greedy_output(tmp_path):
    torch.manual_seed(0)
    student, mask_id = tiny_mtp_model(trained=False)
    teacher = frozen_teacher(student)
    val = Validation(random_prompts(4, seed=2), max_new_tokens=10, stop_token_ids=(), strategies=("verify",))
    teacher_reference(teacher, val)
    cfg = TrainConfig(steps=3, lr=3e-2, warmup_steps=0, batch_size=4, seq_len=48, k_max=4, log_every=0)
    tok = tiny_tokenizer()
    train(student, teacher, _examples(tok), cfg, mask_token_id=mask_id, eos_token_id=tok.eos_token_id,
          progress=False, validation=val)
    ev = val.history[-1]["eval"]
    assert ev["verify"]["agreement"] == ev["plain"]["agreement"]
    assert ev["verify"]["token_agreement"] == ev["plain"]["token_agreement"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_validate_cli")
    save_checkpoint(root / "base", tiny_model("llama"))
    convert_checkpoint(str(root / "base"), str(root / "mtp0"))
    with open(root / "data.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"prompt": f"What is {i} + {i}?", "response": f" {i} + {i} = {2 * i}."}) + "\n")
    with open(root / "eval.jsonl", "w") as f:
        for i in range(6, 9):
            f.write(json.dumps({"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n")
    return root


ARGS = ["--steps", "4", "--batch-size", "2", "--seq-len", "48", "--k-max", "3", "--lr", "1e-3",
        "--warmup-steps", "1", "--no-progress", "--device", "cpu"]


def test_cli_validation_and_keep_best(converted, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", str(converted / "mtp0"), "--data", str(converted / "data.jsonl"), "--out", str(out),
            "--eval-data", str(converted / "eval.jsonl"), "--eval-every", "2", "--eval-max-new-tokens", "8",
            "--eval-strategies", "conf_adapt:0.9,verify", "--keep-best", "conf_adapt:0.9, token_agreement>=0.5"]
    assert train_main(argv + ARGS) == 0
    log = [json.loads(line) for line in open(out / "train_log.jsonl")]
    teacher = next(r for r in log if "eval_teacher" in r)["eval_teacher"]
    assert 0.0 <= teacher["accuracy"] <= 1.0
    evals = [r for r in log if "eval" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert set(evals[0]["eval"]) == {"plain", "conf_adapt:0.9", "verify"}
    assert all("accuracy" in m for m in evals[0]["eval"].values())
    best = json.loads((out / "best.json").read_text())
    assert best["mode"] == "conf_adapt:0.9" and best["best"] is not None
    assert (out / "best" / "config.json").exists() and (out / "validation.png").exists()
    assert "[mtp-eval]" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--keep-best", "verify, agreement>=0.9"], "need --eval-data"),
    (["--eval-data", "missing.jsonl"], "does not exist"),
    (["--eval-data", "EVAL", "--keep-best", "verify"], "keep-best"),
    (["--eval-data", "EVAL", "--eval-strategies", "fast"], "bad strategy"),
])
def test_cli_validation_errors(converted, tmp_path, extra, message):
    extra = [str(converted / "eval.jsonl") if a == "EVAL" else a for a in extra]
    argv = ["--model", str(converted / "mtp0"), "--data", str(converted / "data.jsonl"), "--out", str(tmp_path)]
    with pytest.raises(ValueError, match=message):
        train_main(argv + extra + ARGS)
