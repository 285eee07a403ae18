"""Sampled requests (temperature > 0) through a real SGLang Engine on CPU with MTP: seeded
outputs equal the reference decoder's for every strategy, alone and in a batch mixed with
greedy and plain-decoding requests; SGLang's default sampling parameters decode with MTP.

One Engine start: server default conf_adapt tau 0.9, k_max 4 (overlap scheduling on).
"""

from __future__ import annotations

import pytest

from tests.models import random_prompts
from tests.sglang.harness import assert_idle_pool, build_checkpoint, mtp_params, reference, run_engine

NEW = 20
# (strategy, SGLang sampling parameters, the reference's sampling, seed); the fourth
# request sends no temperature (SGLang's default 1.0) and no strategy (the server default).
SAMPLED = [
    ("verify:4", {"temperature": 0.8}, 0.8, 11),
    ("static:3", {"temperature": 1.0}, 1.0, 12),
    ("conf_adapt:0.5:4", {"temperature": 0.7, "top_p": 0.9, "top_k": 30}, dict(temperature=0.7, top_p=0.9, top_k=30),
     13),
    ("conf_adapt:0.9:4", {}, 1.0, 14),
    ("verify:2", {"temperature": 1.2, "min_p": 0.05}, dict(temperature=1.2, min_p=0.05), 15),
]
GREEDY = ["verify:4", "conf_adapt:0.5:4"]


def sampled_params(i):
    strategy, extra, _, seed = SAMPLED[i]
    custom = {} if i == 3 else {"custom_params": mtp_params(strategy)}
    return {"max_new_tokens": NEW, "sampling_seed": seed, **extra, **custom}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sampling_engine")
    model, _ = build_checkpoint(tmp / "ckpt")
    n = len(SAMPLED)
    prompts = random_prompts(n + len(GREEDY) + 2, seed=9, min_len=2, max_len=12)
    ref = reference(model, prompts[:n], [s[0] for s in SAMPLED], NEW, sampling=[s[2] for s in SAMPLED],
                    seed=[s[3] for s in SAMPLED])
    ref_greedy = reference(model, prompts[n:n + 2], GREEDY, NEW)
    mixed = ([sampled_params(i) for i in range(n)]
             + [{"temperature": 0, "max_new_tokens": NEW, "custom_params": mtp_params(s)} for s in GREEDY]
             + [{"temperature": 0.8, "max_new_tokens": NEW, "custom_params": {"mtp": False}},
                {"temperature": 0, "max_new_tokens": NEW, "custom_params": {"mtp": False}}])
    jobs = [{"op": "generate", "input_ids": prompts, "sampling_params": mixed}]
    jobs += [{"op": "generate", "input_ids": [prompts[i]], "sampling_params": sampled_params(i)} for i in range(n)]
    jobs += [{"op": "generate", "input_ids": prompts[:2],  # no seed, no temperature: MTP all the same
              "sampling_params": [{"max_new_tokens": NEW, "ignore_eos": True,
                                   "custom_params": mtp_params("static:3")}] * 2},
             # n = 3 copies of one request, seeded and not (SGLang sends each copy as its own request)
             {"op": "generate", "input_ids": prompts[0], "sampling_params": {**sampled_params(1), "n": 3}},
             {"op": "generate", "input_ids": prompts[0],
              "sampling_params": {k: v for k, v in sampled_params(1).items() if k != "sampling_seed"} | {"n": 3}},
             {"op": "flush"}, {"op": "probe"}]
    out = run_engine(tmp, "sampling", tmp / "ckpt", jobs, mtp={"strategy": "conf_adapt", "threshold": 0.9,
                                                             "k_max": 4})["results"]
    ref_static = reference(model, prompts[:1], [SAMPLED[1][0]], NEW, sampling=SAMPLED[1][2], seed=SAMPLED[1][3])[0]
    return dict(out=out, ref=ref, ref_greedy=ref_greedy, ref_plain=reference(model, prompts[-1:], ["ntp"], NEW),
                ref_static=ref_static)


def test_seeded_sampling_equals_the_reference_decoder_in_a_mixed_batch(run):
    outs = run["out"][0]["outputs"]
    n = len(SAMPLED)
    assert [o["output_ids"] for o in outs[:n]] == run["ref"]
    assert [o["output_ids"] for o in outs[n:n + 2]] == run["ref_greedy"]
    assert len(outs[n + 2]["output_ids"]) > 0  # plain sampling through SGLang's own sampler
    assert outs[n + 3]["output_ids"] == run["ref_plain"][0]


def test_seeded_sampling_is_the_same_alone(run):
    n = len(SAMPLED)
    alone = [run["out"][1 + i]["outputs"][0]["output_ids"] for i in range(n)]
    assert alone == run["ref"]


def test_default_sampling_parameters_decode_with_mtp(run):
    n = len(SAMPLED)
    outs = run["out"][1 + n]["outputs"]
    for o in outs:
        assert len(o["output_ids"]) == NEW
        # prefill (1 token), then 3 per pass (the first decode pass re-runs the prompt's last
        # row, so it adds 2): 8 passes for 20 tokens; plain sampling would take 20
        assert o["forward_passes"] <= NEW // 3 + 2, o
    assert outs[0]["output_ids"] != outs[1]["output_ids"]  # unseeded: fresh seeds


def test_parallel_samples_follow_the_seed(run):
    # n copies are the same request: with one sampling_seed every copy draws the seed's tokens
    # (the reference decoder's); without one each copy gets its own fresh seed.
    n = len(SAMPLED)
    seeded, fresh = ([o["output_ids"] for o in run["out"][job]["outputs"]] for job in (2 + n, 3 + n))
    assert len(seeded) == len(fresh) == 3
    assert seeded == [run["ref_static"]] * 3
    assert len({tuple(o) for o in fresh}) > 1


def test_no_kv_leak_after_sampling(run):
    assert_idle_pool(run["out"][-2], run["out"][-1])
