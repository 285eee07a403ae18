"""Tests of the step-cost benchmark (bench/step_cost.py): its decoder matches transformers,
its tables compute the right ratios, and the script runs (CPU --smoke). No timed assertions."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import step_cost, step_cost_report  # noqa: E402
from bench.static_decoder import DecoderConfig, StaticDecoder  # noqa: E402


@pytest.mark.parametrize("kind", ["llama", "qwen3", "qwen2"])
@pytest.mark.parametrize("expand_kv", [False, True])
def test_static_decoder_matches_transformers(kind, expand_kv):
    """Prefix forward + a W-token forward through the static cache == one HF forward."""
    import transformers as tf

    cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM), "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
           "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM)}[kind]
    extra = {"qwen3": dict(head_dim=32), "qwen2": dict(tie_word_embeddings=True)}.get(kind, {})
    cfg = cls[0](vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64, **extra)
    torch.manual_seed(0)
    hf = cls[1](cfg).eval()
    model = StaticDecoder(DecoderConfig.from_hf(cfg.to_dict()), 64).eval()
    model.load_state_dict(hf.state_dict())
    model.set_expand_kv(expand_kv)
    ids = torch.randint(0, 97, (3, 19))
    with torch.no_grad():
        want = hf(ids).logits
        caches = model.allocate_cache(3, 32)
        got = torch.cat([model(ids[:, :12], caches, 0), model(ids[:, 12:], caches, 12)], 1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_decoder_config_from_hf_errors_and_defaults():
    with pytest.raises(ValueError, match="missing field"):
        DecoderConfig.from_hf({"hidden_size": 8})
    c = DecoderConfig.from_hf(step_cost.CONFIGS["llama-3.1-8b"])
    assert (c.head_dim, c.num_key_value_heads, c.qk_norm) == (128, 8, False)
    assert DecoderConfig.from_hf(step_cost.CONFIGS["qwen3-4b"]).qk_norm


def test_step_cost_tables():
    pts = [dict(batch=1, ctx=512, width=w, seconds=s, floor_s=0.005, scan_seconds=None if w == 1 else 1e-5,
                scan_note=None) for w, s in ((1, 0.010), (15, 0.011), (31, 0.0125))]
    rows = step_cost_report.free_lunch(pts)
    assert rows[0]["t1"] == 0.010 and rows[0]["ratios"] == {15: pytest.approx(1.1), 31: pytest.approx(1.25)}
    ceil = step_cost_report.ceilings(pts, [3.3, 3.1])
    assert [r["k_max"] for r in ceil] == [8, 16]
    assert ceil[1]["ceiling"][3.3] == pytest.approx(3.3 / 1.25)
    assert step_cost_report.lm_head_saving(dict(seconds=0.010, lm_head_all_s=0.002, lm_head_block_s=0.0012)) == (
        pytest.approx(8.0))


def test_step_cost_smoke_runs(tmp_path):
    assert step_cost.main(["--smoke", "--batch", "1", "--ctx", "16", "--k", "1,3", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "step_cost-smoke-cpu.json").read_text())
    model = result["models"]["tiny"]
    assert [p["width"] for p in model["points"]] == [1, 5] and model["check_rel_diff"] < 1e-4
    assert all(p["seconds"] > 0 for p in model["points"])
    wide = model["points"][1]
    assert wide["lm_head_all_s"] > 0 and wide["lm_head_block_s"] > 0 and model["points"][0]["lm_head_all_s"] is None
    md = (tmp_path / "step_cost-smoke-cpu.md").read_text()
    assert "time(W) / time(1)" in md and "lm_head over all W rows" in md
