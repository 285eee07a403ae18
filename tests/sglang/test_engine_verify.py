"""Lossless verify mode equals plain SGLang decoding; start-up refusals are clear.

Two Engine starts: plain SGLang (no plugin mode) and ``--mtp-strategy verify`` as the server
default with the CPU's default scheduling (an MTP server turns overlap scheduling off on a CPU;
the other modules keep it on, as on a GPU).
"""

from __future__ import annotations

import pytest

from tests.models import random_prompts
from tests.sglang.harness import assert_idle_pool, build_checkpoint, reference, run_engine

NEW = 20


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify_engine")
    model, _ = build_checkpoint(tmp / "ckpt")
    return tmp, model


def test_verify_equals_plain_sglang_and_reference(ckpt):
    tmp, model = ckpt
    prompts = random_prompts(6, seed=7, min_len=1, max_len=12)
    greedy = {"temperature": 0, "max_new_tokens": NEW}
    jobs = [{"op": "generate", "input_ids": prompts, "sampling_params": greedy},
            {"op": "staggered", "input_ids": prompts[:3], "delay": 0.1, "sampling_params": [greedy] * 3},
            {"op": "generate", "input_ids": prompts, "return_logprob": True, "sampling_params": greedy}]
    plain = run_engine(tmp, "plain", tmp / "ckpt", jobs, mtp=None)["results"]
    info = {"op": "server_info", "keys": ["disable_overlap_schedule"]}
    verify = run_engine(tmp, "verify", tmp / "ckpt", jobs + [{"op": "flush"}, {"op": "probe"}, info],
                        mtp={"strategy": "verify", "k_max": 3},
                        env={"SGLANG_MTP_CPU_OVERLAP": "0"})["results"]  # the CPU default
    assert verify[5] == {"disable_overlap_schedule": True}  # the plugin turned it off
    ref = reference(model, prompts, ["ntp"] * len(prompts), NEW)
    plain_ids = [o["output_ids"] for o in plain[0]["outputs"]]
    verify_ids = [o["output_ids"] for o in verify[0]["outputs"]]
    assert plain_ids == ref
    assert verify_ids == plain_ids
    assert [o["output_ids"] for o in verify[1]["outputs"]] == ref[:3]
    # Logprobs in a batch: each request's values are plain SGLang's, token for token.
    for got, want in zip(verify[2]["outputs"], plain[2]["outputs"]):
        assert got["output_ids"] == want["output_ids"]
        assert [t for _, t in got["logprobs"]] == [t for _, t in want["logprobs"]]
        assert max(abs(a - b) for (a, _), (b, _) in zip(got["logprobs"], want["logprobs"])) < 1e-4
    assert_idle_pool(verify[3], verify[4])


def test_retracted_requests_finish_losslessly_without_leaks(ckpt):
    # A KV pool too small for the batch, and SGLang's own retraction test switch (retract
    # decoding requests every 3 steps): retracted requests free their KV and re-prefill later
    # with their output so far. Verify mode must stay lossless and leak nothing.
    tmp, model = ckpt
    prompts = random_prompts(12, seed=3, min_len=8, max_len=16)
    greedy = {"temperature": 0, "max_new_tokens": 60, "ignore_eos": True}
    lossy = {**greedy, "custom_params": {"mtp": {"strategy": "conf_adapt", "threshold": 0.5}}}
    params = [greedy] * 8 + [lossy] * 4  # lossy requests restart their blocks: no parity, no crash
    jobs = [{"op": "generate", "input_ids": prompts, "sampling_params": params}, {"op": "flush"}, {"op": "probe"}]
    out = run_engine(tmp, "retract", tmp / "ckpt", jobs, mtp={"strategy": "verify", "k_max": 3},
                     engine={"max_total_tokens": 384, "schedule_conservativeness": 0.01},
                     env={"SGLANG_TEST_RETRACT": "1"})["results"]
    probe = out[2]
    assert probe["retracted"] > 0, probe  # the path under test really ran
    outs = out[0]["outputs"]
    assert [o["finish_reason"] for o in outs] == ["length"] * len(prompts)
    assert all(len(o["output_ids"]) == 60 for o in outs)
    assert [o["output_ids"] for o in outs[:8]] == reference(model, prompts[:8], ["ntp"] * 8, 60)
    assert_idle_pool(out[1], probe)


def test_checkpoint_without_mask_token_refused_at_startup(tmp_path):
    build_checkpoint(tmp_path / "plain_ckpt", with_mask=False)
    data = run_engine(tmp_path, "nomask", tmp_path / "plain_ckpt", [], mtp={"strategy": "conf_adapt"})
    err = data.get("startup_error", "")
    assert "mask token" in err and "--mtp-mask-token-id" in err, err
