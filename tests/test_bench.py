"""Unit tests of the serving-benchmark logic (bench/serve.py, bench/serving/, bench/report.py):
prompts, answers, modes, summaries, ratio tables, manifest and presets (the client and the
server process: tests/test_bench_client.py). Nothing here needs SGLang or a GPU."""

import json
import sys
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.serving import client, manifest, modes, prompts, stats  # noqa: E402


# ---------------------------------------------------------------- prompts and answers
def test_builtin_prompt_set_is_valid():
    ps = prompts.load_prompts(prompts.DEFAULT_PROMPTS)
    assert len(ps) == 64
    assert len({p.text for p in ps}) == 64
    assert all(p.answer is not None and prompts.parse_number(p.answer) is not None for p in ps)
    assert len(prompts.load_prompts(prompts.DEFAULT_PROMPTS, limit=5)) == 5


@pytest.mark.parametrize("line, needle", [
    ('{"prompt": "x"', ":2: not valid JSON"),
    ('["x"]', ":2: expected a JSON object"),
    ('{"answer": "3"}', ":2: 'prompt' must be a non-empty string"),
    ('{"prompt": "  "}', ":2: 'prompt' must be a non-empty string"),
    ('{"prompt": "x", "answer": "three"}', ":2: 'answer' 'three' is not a number"),
    ('{"prompt": "x", "answer": [3]}', ":2: 'answer' must be a number or a string"),
])
def test_bad_prompt_records_name_file_and_line(tmp_path, line, needle):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok", "answer": 1}\n' + line + "\n")
    with pytest.raises(ValueError, match="p.jsonl" + needle):
        prompts.load_prompts(f)


def test_prompt_file_errors_and_blank_lines(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        prompts.load_prompts(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no prompts"):
        prompts.load_prompts(tmp_path / "empty.jsonl")
    (tmp_path / "ok.jsonl").write_text('\n{"prompt": "a"}\n\n{"prompt": "b", "answer": 2.5}\n')
    assert prompts.load_prompts(tmp_path / "ok.jsonl") == [prompts.Prompt("a"), prompts.Prompt("b", "2.5")]


def test_toy_prompts_carry_answers_in_toy_format():
    ps = prompts.load_prompts("toy", limit=3)
    assert len(ps) == 3 and all(p.text.startswith("Q: ") and p.text.endswith("\nA:") for p in ps)
    assert all(prompts.parse_number(p.answer) is not None for p in ps)


def test_toy_prompts_after_worked_examples_keep_each_question_and_answer():
    base = prompts.load_prompts("toy", limit=4)
    two = prompts.load_prompts("toy:2", limit=4)
    assert [p.answer for p in two] == [p.answer for p in base]
    for b, t in zip(base, two):
        examples = t.text[:-len(b.text)]
        assert t.text.endswith(b.text) and examples.count("Q: ") == 2 and examples.count("The answer is ") == 2
    assert len({t.text[:-len(b.text)] for b, t in zip(base, two)}) == 4  # each prompt has its own examples
    assert prompts.load_prompts("toy:0", limit=4) == base
    assert prompts.resolve_format("auto", "toy:2", False) == "raw"


@pytest.mark.parametrize("spec", ["toy:", "toy:x", "toy:-1", "toy:1.5"])
def test_bad_worked_example_counts_are_named(spec):
    with pytest.raises(ValueError, match="toy:N"):
        prompts.load_prompts(spec)


@pytest.mark.parametrize("text, expected", [
    ("so 47 - 8 = 39. The answer is 39.", 39),
    ("The answer is: 1,350 words, not 12", 1350),
    ("The answer is $21.", 21),
    ("The answer is **-4**", -4),
    ("Reasoning 3 + 4 = 7\n#### 7", 7),
    ("thus \\boxed{256}", 256),
    ("first 12 then 0.5", Fraction(1, 2)),
    ("The answer is 5. Later: the answer is 6.", 5),
    ("no digits here", None),
])
def test_extract_answer(text, expected):
    assert prompts.extract_answer(text) == expected


def test_is_correct_exact_number_match():
    assert prompts.is_correct("The answer is 9000.", "9000") is True
    assert prompts.is_correct("The answer is 9,000.00", "9000") is True
    assert prompts.is_correct("The answer is 900.", "9000") is False
    assert prompts.is_correct("nothing", "1") is False
    assert prompts.is_correct("The answer is 3.", None) is None


class _ChatTokenizer:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "<user>" + messages[0]["content"] + "<assistant>"


def test_formats():
    p = prompts.Prompt("How many?", "3")
    assert prompts.format_prompt(p, "raw") == "How many?"
    qa = prompts.format_prompt(p, "qa")
    assert qa.startswith("Question: How many?\n") and qa.endswith("Answer:") and "The answer is N" in qa
    chat = prompts.format_prompt(p, "chat", _ChatTokenizer())
    assert chat.startswith("<user>How many?\n") and chat.endswith("<assistant>")
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        prompts.format_prompt(p, "chat")
    assert prompts.resolve_format("auto", "toy", True) == "raw"
    assert prompts.resolve_format("auto", "x.jsonl", True) == "chat"
    assert prompts.resolve_format("auto", "x.jsonl", False) == "qa"
    assert prompts.resolve_format("qa", "x.jsonl", True) == "qa"
    with pytest.raises(ValueError, match="--prompt-format"):
        prompts.resolve_format("markdown", "x", False)


def test_prompts_hash_depends_on_texts_and_answers():
    a = [prompts.Prompt("q", "1")]
    assert prompts.prompts_sha256(a) == prompts.prompts_sha256([prompts.Prompt("q", "1")])
    assert prompts.prompts_sha256(a) != prompts.prompts_sha256([prompts.Prompt("q", "2")])
    assert prompts.prompts_sha256(a) != prompts.prompts_sha256([prompts.Prompt("q ", "1")])


# ---------------------------------------------------------------- modes
def test_mode_flags():
    flags = lambda s, **kw: modes.parse_mode(s).server_flags(**kw)  # noqa: E731
    assert flags("plain") == []
    assert flags("ntp") == ["--decode-mode", "ntp"]
    assert flags("static:3") == ["--decode-mode", "mtp", "--mtp-strategy", "static", "--mtp-k-max", "3"]
    assert flags("verify:8") == ["--decode-mode", "mtp", "--mtp-strategy", "verify", "--mtp-k-max", "8"]
    assert flags("conf_adapt:0.9:16") == ["--decode-mode", "mtp", "--mtp-strategy", "conf_adapt",
                                          "--mtp-k-max", "16", "--mtp-threshold", "0.9"]
    eagle = flags("eagle3:5:1:6", draft_model="/d")
    assert eagle[:4] == ["--speculative-algorithm", "EAGLE3", "--speculative-draft-model-path", "/d"]
    assert eagle[4:] == ["--speculative-num-steps", "5", "--speculative-eagle-topk", "1",
                         "--speculative-num-draft-tokens", "6"]
    with pytest.raises(ValueError, match="needs --draft-model"):
        flags("eagle3")
    assert [m.spec for m in modes.parse_modes(modes.DEFAULT_MODES)][:2] == ["ntp", "static:2"]


@pytest.mark.parametrize("spec, needle", [
    ("mtp:3", "unknown kind 'mtp'"),
    ("static", "static takes 1"),
    ("conf_adapt:0.9", "conf_adapt takes 2"),
    ("static:0", r"k must be in \[1, 16\]"),
    ("verify:17", r"k must be in \[1, 16\]"),
    ("static:two", "k must be an integer"),
    ("conf_adapt:1.5:8", r"threshold must be in \[0, 1\]"),
    ("conf_adapt:high:8", "threshold must be a number"),
    ("eagle3:1:2", "eagle3 takes 0 or 3"),
])
def test_bad_modes(spec, needle):
    with pytest.raises(ValueError, match=needle):
        modes.parse_mode(spec)


def test_mode_list_and_concurrency_errors():
    with pytest.raises(ValueError, match="repeated mode"):
        modes.parse_modes("ntp,static:2,ntp")
    with pytest.raises(ValueError, match="no mode"):
        modes.parse_modes(" , ")
    assert modes.parse_concurrency("1,2, 16") == [1, 2, 16]
    for bad in ("0,1", "a", ""):
        with pytest.raises(ValueError, match="--concurrency"):
            modes.parse_concurrency(bad)


# ---------------------------------------------------------------- summaries and tables
def _req(ok=True, tokens=10, latency=1.0, ttft=0.1, passes=None, correct=None, error=None):
    r = client.RequestResult(0, ok=ok, latency=latency if ok else None, ttft=ttft if ok else None,
                             output_tokens=tokens if ok else 0, forward_passes=passes, correct=correct, error=error)
    return r.to_json()


def test_summarize_aggregates():
    reqs = [_req(tokens=10, latency=1.0, passes=4, correct=True), _req(tokens=30, latency=2.0, passes=8, correct=False),
            _req(tokens=20, latency=4.0, passes=8, correct=True), _req(ok=False, error="HTTP 500: boom")]
    s = stats.summarize(reqs, wall=5.0, mode_kind="conf_adapt")
    assert (s["requests"], s["completed"], s["failed"]) == (4, 3, 1)
    assert s["errors"] == ["HTTP 500: boom"]
    assert s["output_tokens"] == 60 and s["throughput"] == pytest.approx(12.0)
    assert s["per_user_tps_median"] == pytest.approx(10.0)          # 10/1, 15/2, 20/4 -> 10
    assert s["per_user_tps_mean"] == pytest.approx((10 + 15 + 5) / 3)
    assert s["latency_p50"] == 2.0 and s["latency_p90"] == 4.0
    assert s["effective_k"] == pytest.approx(60 / 20) and s["effective_k_source"] == "server"
    assert s["accuracy"] == pytest.approx(2 / 3) and s["graded"] == 3


def test_summarize_effective_k_sources():
    assert stats.summarize([_req()], 1.0, "ntp")["effective_k"] == 1.0
    unknown = stats.summarize([_req()], 1.0, "conf_adapt")
    assert unknown["effective_k"] is None and unknown["effective_k_source"] == "not reported"
    partial = stats.summarize([_req(tokens=12, passes=4), _req()], 1.0, "static")
    assert partial["effective_k"] == 3.0 and partial["effective_k_source"].startswith("server (1/2")
    nothing = stats.summarize([_req(ok=False, error="x")], 1.0, "ntp")
    assert nothing["throughput"] is None and nothing["effective_k"] is None and nothing["accuracy"] is None


def test_median_index():
    assert stats.median_index([5.0, 1.0, 3.0]) == 2
    assert stats.median_index([4.0, 1.0, 3.0, 2.0]) == 2       # upper middle of 1, 2, 3, 4
    assert stats.median_index([7.0]) == 0
    with pytest.raises(ValueError):
        stats.median_index([])


def _run(mode, c, tput=None, per_user=None, lat=None, status="ok"):
    summary = {"throughput": tput, "per_user_tps_median": per_user, "latency_p50": lat}
    return {"mode": mode, "concurrency": c, "status": status, "error": None if status == "ok" else "boom",
            "summary": summary if status == "ok" else None}


def test_ratio_rows_use_the_baseline_at_the_same_concurrency():
    runs = [_run("ntp", 1, 100, 100, 2.0), _run("ntp", 4, 300, 75, 2.5), _run("static:3", 1, 250, 240, 1.0),
            _run("static:3", 4, 600, 150, 1.5), _run("static:3", 8, 900, 110, 2.0), _run("verify:8", 1, status="failed")]
    rows = {(r["mode"], r["concurrency"]): r for r in stats.ratio_rows(runs, "ntp")}
    assert rows[("static:3", 1)]["throughput_ratio"] == pytest.approx(2.5)
    assert rows[("static:3", 4)]["per_user_ratio"] == pytest.approx(2.0)
    assert rows[("static:3", 4)]["latency_ratio"] == pytest.approx(0.6)
    assert rows[("static:3", 8)]["throughput_ratio"] is None        # no baseline at 8
    assert rows[("ntp", 1)]["throughput_ratio"] == 1.0
    assert rows[("verify:8", 1)]["status"] == "failed" and rows[("verify:8", 1)]["throughput_ratio"] is None
    failed_base = stats.ratio_rows([_run("ntp", 1, status="failed"), _run("static:2", 1, 5, 5, 1)], "ntp")
    assert failed_base[1]["throughput_ratio"] is None
    assert stats.pick_baseline(["plain", "static:2"]) == "plain"
    assert stats.pick_baseline(["static:2"]) is None


def _fake_result(tmp_path):
    cfg = tmp_path / "model"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"model_type": "llama", "mtp_mask_token_id": 7, "mtp_trained": True}))
    info = {"source": "p.jsonl", "count": 2, "format": "qa", "sha256": "ab" * 32}
    m = manifest.build_manifest({"max_new_tokens": 8, "num_prompts": 2, "device": "cpu"}, str(cfg), info)
    reqs = [_req(tokens=8, latency=0.5, passes=2, correct=True), _req(tokens=8, latency=1.0, passes=4, correct=False)]
    ok = {"mode": "static:2", "concurrency": 1, "status": "ok", "requests": reqs, "wall_s": 1.5,
          "summary": stats.summarize(reqs, 1.5, "static")}
    base = dict(ok, mode="ntp", summary=stats.summarize(reqs, 3.0, "ntp"))
    return {"manifest": m, "modes": [{"mode": "ntp", "status": "ok"}, {"mode": "static:2", "status": "ok"},
                                     {"mode": "verify:4", "status": "failed", "error": "ServerError: no | good",
                                      "log": "logs/verify_4.log"}],
            "runs": [base, ok, {"mode": "verify:4", "concurrency": 1, "status": "failed",
                                "error": "ServerError: no | good"}]}


def test_report_table_shows_ratios_and_failures(tmp_path):
    result = _fake_result(tmp_path)
    path = report.write_report(result, tmp_path / "out")
    md = path.read_text()
    assert result["manifest"]["hardware"]["label"] in md and "mask id 7" in md and "against `ntp`" in md
    lines = [line for line in md.splitlines() if line.startswith("| static:2")]
    assert len(lines) == 1 and "| 2.00x |" in lines[0] and "| 50.0% (n=2) |" in lines[0]
    assert "| 2.67 |" in lines[0]                                   # effective k: 16 tokens / 6 passes
    assert "| verify:4 | 1 | FAILED: ServerError: no / good |" in md
    assert "## Failed modes" in md and "logs/verify_4.log" in md
    assert "`bench/ttft.py` measures TTFT paired" in md  # the TTFT column is not a paired measurement


def test_manifest_records_model_and_versions(tmp_path):
    m = _fake_result(tmp_path)["manifest"]
    assert m["model"]["mtp_mask_token_id"] == 7 and len(m["model"]["config_sha256"]) == 64
    assert m["versions"]["torch"] is not None and "sglang" in m["versions"]
    assert m["hardware"]["label"] and m["prompts"]["sha256"] == "ab" * 32 and m["args"]["max_new_tokens"] == 8
    assert manifest.model_info(str(tmp_path / "nowhere")) == {"path": str(tmp_path / "nowhere")}


# ---------------------------------------------------------------- serve.py presets
def _serve_args(argv):
    from bench import serve
    return serve.resolve_args(serve.build_parser().parse_args(argv), argv)


def test_cpu_smoke_preset_and_explicit_flags_win():
    a = _serve_args(["--cpu-smoke", "--modes", "ntp,static:4", "--no-ignore-eos", "--out", "/tmp/x"])
    assert [m.spec for m in a.mode_list] == ["ntp", "static:4"] and a.levels == [1, 2, 4]
    assert a.ignore_eos is False and a.device == "cpu" and a.num_prompts == 6 and str(a.out) == "/tmp/x"
    b = _serve_args(["--cpu-smoke"])
    assert b.ignore_eos is True and b.max_new_tokens == 32 and b.repeats == 3 and b.out.name == "serve-cpu-smoke"
    c = _serve_args(["--model", "/m", "--device", "cpu", "--draft-model", "/d", "--modes", "ntp"])
    assert [m.kind for m in c.mode_list] == ["ntp", "eagle3"] and c.levels == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError, match="needs --draft-model"):
        _serve_args(["--model", "/m", "--device", "cpu", "--modes", "ntp,eagle3"])
    with pytest.raises(ValueError, match="--num-prompts"):
        _serve_args(["--model", "/m", "--device", "cpu", "--num-prompts", "0"])


def test_smollm2_preset_uses_the_adapted_model_and_its_held_out_prompts(monkeypatch, tmp_path):
    import sglang_mtp.recipe as recipe

    monkeypatch.setattr(recipe, "adapted_model", lambda: "/adapted")
    a = _serve_args(["--cpu-smoke", "--model", "smollm2"])
    assert a.model == "/adapted" and a.prompts == "smollm2" and a.levels == [1, 4, 16]
    assert [m.spec for m in a.mode_list] == ["ntp", "static:2", "conf_adapt:0.9:4", "verify:4"]
    assert a.ignore_eos is False and a.out.name == "serve-cpu-smollm2"
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="sglang-mtp smollm2"):
        recipe.adapted_model(str(tmp_path))


def test_smollm2_prompts_are_held_out_chat_prompts_without_the_math_instruction():
    from sglang_mtp.recipe.pipeline import RecipeConfig
    from sglang_mtp.recipe.prompts import make_prompts

    ps = prompts.load_prompts("smollm2", limit=5)
    train, _ = make_prompts(RecipeConfig().n_train, RecipeConfig().n_eval)
    assert len(ps) == 5 and all(p.answer is None and p.text not in train for p in ps)
    assert prompts.format_prompt(ps[0], "chat", _ChatTokenizer()) == "<user>" + ps[0].text + "<assistant>"
    assert prompts.resolve_format("auto", "smollm2", True) == "chat"
