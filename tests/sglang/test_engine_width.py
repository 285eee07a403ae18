"""Load-adaptive block width through a real SGLang Engine on CPU (one Engine start).

Server: static k_max 4 (widths 1, 3, 7), ``--mtp-token-budget 24``: one request decodes at
width 7, 8 requests at width 3 (blocks of 2), 32 requests at width 1 (one token per pass,
their first decode pass included: at cap 1 no mask rides the prefill and no first step
re-feeds the last prompt token). Responses report the widths in ``meta_info["mtp_widths"]``.
"""

from __future__ import annotations

import pytest

from sglang_mtp.width import WidthPolicy
from tests.models import random_prompts
from tests.sglang.harness import assert_idle_pool, build_checkpoint, mtp_params, reference, run_engine

K_MAX, BUDGET, NEW = 4, 24, 16


GREEDY = {"temperature": 0, "max_new_tokens": NEW}


def start(tmp_path_factory, name, seed, jobs_for, mtp):
    """One Engine on a fresh tiny checkpoint running ``jobs_for(prompts)`` (32 prompts), then
    a flush and an idle KV check."""
    tmp = tmp_path_factory.mktemp(name)
    model, _ = build_checkpoint(tmp / "ckpt")
    prompts = random_prompts(32, seed=seed, min_len=3, max_len=12)
    jobs = jobs_for(prompts) + [{"op": "flush"}, {"op": "probe"}]
    data = run_engine(tmp, name, tmp / "ckpt", jobs, mtp=mtp)
    return dict(res=data["results"], model=model, prompts=prompts)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return start(tmp_path_factory, "width", 11, width_jobs,
                 {"strategy": "static", "k_max": K_MAX, "token_budget": BUDGET})


def width_jobs(prompts):
    greedy = GREEDY
    return [
        {"op": "generate", "input_ids": [prompts[0]], "sampling_params": greedy},  # 0: alone
        {"op": "generate", "input_ids": prompts[:8], "sampling_params": greedy},  # 1: 8 users
        {"op": "generate", "input_ids": prompts,  # 2: 32 users, lossless
         "sampling_params": {**greedy, "custom_params": mtp_params("verify:4")}},
        {"op": "generate", "input_ids": prompts, "return_logprob": True,  # 3: plain + logprobs
         "sampling_params": {**greedy, "custom_params": {"mtp": False}}},
        {"op": "generate", "input_ids": [prompts[1]],  # 4: alone, budget-capped (k 4 > cap 2)
         "sampling_params": {**greedy, "custom_params": mtp_params("static:4")}},
        {"op": "generate", "input_ids": prompts,  # 5: 32 users, lossy, at cap 1 throughout
         "sampling_params": {**greedy, "ignore_eos": True}},
        {"op": "generate", "input_ids": prompts, "return_logprob": True,  # 6: the same without prefill
         "sampling_params": {**greedy, "ignore_eos": True}},  # masks (logprobs): first steps at cap 1
    ]


def outputs(run, job):
    res = run["res"][job]
    assert "outputs" in res, res
    return res["outputs"]


def test_width_follows_the_number_of_users(run):
    alone, eight, many = outputs(run, 0)[0], outputs(run, 1), outputs(run, 2)
    assert "7" in alone["widths"] and set(alone["widths"]) <= {"3", "7"}, alone["widths"]
    # 8 users share a 24-token budget: width 3 while more than 3 are decoding.
    assert all("3" in o["widths"] for o in eight), [o["widths"] for o in eight]
    assert all("1" in o["widths"] and "7" not in o["widths"] for o in many), [o["widths"] for o in many]


def test_lossy_output_equals_the_reference_with_the_same_caps(run):
    policy = WidthPolicy(K_MAX, budget=BUDGET)
    model, prompts = run["model"], run["prompts"]
    for job, prompt in ((0, prompts[0]), (4, prompts[1])):
        want = reference_with(model, prompt, "static:4", policy)
        assert outputs(run, job)[0]["output_ids"] == want


def reference_with(model, prompt, strategy, policy):
    from sglang_mtp.decode import generate

    return generate(model, [prompt], strategy=strategy, max_new_tokens=NEW, width_policy=policy)[0].tokens


def test_verify_is_unchanged_at_every_width(run):
    want = reference(run["model"], run["prompts"], ["ntp"] * 32, NEW)
    assert [o["output_ids"] for o in outputs(run, 2)] == want


def test_at_cap_one_every_decode_pass_is_one_token_wide(run):
    """32 users: cap 1 from the prefill on, so no pass is wider than 1 (a first step that
    re-fed the last prompt token would run the whole batch at width 3)."""
    for job in (2, 5, 6):
        outs = outputs(run, job)
        assert all(o["widths"] == {"1": len(o["output_ids"]) - 1} for o in outs), [o["widths"] for o in outs]


def test_lossy_output_at_cap_one_equals_the_reference(run):
    """static:4 at cap 1 is plain greedy decoding, in the reference decoder (its first pass
    emits t1 alone) and through SGLang, with the masks riding the prefill or not."""
    from sglang_mtp.decode import generate

    policy = WidthPolicy(K_MAX, budget=BUDGET)
    want = [r.tokens for r in generate(run["model"], run["prompts"], strategy="static:4", max_new_tokens=NEW,
                                       stop_token_ids=(), width_policy=policy)]
    assert want == reference(run["model"], run["prompts"], ["ntp"] * 32, NEW, stop_token_ids=())
    for job in (5, 6):
        assert [o["output_ids"] for o in outputs(run, job)] == want


def test_plain_logprob_batches_run_at_width_one(run):
    outs = outputs(run, 3)
    want = reference(run["model"], run["prompts"], ["ntp"] * 32, NEW)
    assert [o["output_ids"] for o in outs] == want
    # Every decode pass at width 1 (the prefill emits the first token).
    assert all(o["widths"] == {"1": len(o["output_ids"]) - 1} for o in outs), [o["widths"] for o in outs]
    assert all(len(o["logprobs"]) == len(o["output_ids"]) for o in outs)


def test_no_kv_leak(run):
    assert_idle_pool(run["res"][-2], run["res"][-1])


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """``--mtp-token-budget auto``: calibrates at the first decode step, then serves."""
    return start(tmp_path_factory, "auto", 12, lambda prompts: [
        {"op": "generate", "input_ids": [prompts[0]], "sampling_params": GREEDY},
        {"op": "generate", "input_ids": prompts, "sampling_params": GREEDY},
    ], {"strategy": "verify", "k_max": K_MAX, "token_budget": "auto"})


def test_auto_budget_serves_lossless_output(auto_run):
    alone, many = outputs(auto_run, 0)[0], outputs(auto_run, 1)
    want = reference(auto_run["model"], auto_run["prompts"], ["ntp"] * 32, NEW)
    assert alone["output_ids"] == want[0] and [o["output_ids"] for o in many] == want
    assert alone["widths"] and all(o["widths"] for o in many if len(o["output_ids"]) > 1)
    assert set(alone["widths"]) <= {"1", "3", "7"}
    assert_idle_pool(auto_run["res"][-2], auto_run["res"][-1])
