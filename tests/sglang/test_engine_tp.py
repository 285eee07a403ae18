"""Tensor parallelism on the CPU: ``tp_size=2`` (two gloo ranks; SGLang's CPU thread binding
``SGLANG_CPU_OMP_THREADS_BIND`` gives each rank a core). Under TP rank 0 decides every
accept and broadcasts it (``sglang_plugin/rank_sync.py``); a rank that computed or applied a
different decision would emit other tokens or hang the next collective. Every strategy,
seeded sampling and a sampler fallback must reproduce the reference decoder, staggered
arrivals included, and leave no KV slot behind.

Two Engine starts: server default conf_adapt tau 0.9, k_max 4 at the fixed width (token budget
0); and verify with ``--mtp-token-budget auto``, whose start-up timings must be rank 0's on
every rank (calibrate.py): ranks that timed their own forwards could pick different widths, and
a forward shaped differently on two ranks hangs their collectives.
"""

from __future__ import annotations

import os

import pytest

from tests.models import random_prompts
from tests.sglang.harness import assert_idle_pool, build_checkpoint, mtp_params, output_ids, reference, run_engine

NEW = 20
STRATEGIES = ["ntp", "static:3", "conf_adapt:0.5:4", "conf_adapt:0.9:4", "verify:4", "verify:2"]
SAMPLED = [("verify:4", {"temperature": 0.8}, 0.8, 11),
           ("conf_adapt:0.5:4", {"temperature": 0.7, "top_p": 0.9}, dict(temperature=0.7, top_p=0.9), 13)]


def _bind() -> str:
    cpus = sorted(os.sched_getaffinity(0))
    return f"{cpus[0]}|{cpus[-1]}"  # one core per rank (the same one on a 1-core machine)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tp_engine")
    model, _ = build_checkpoint(tmp / "ckpt")
    prompts = random_prompts(len(STRATEGIES) + len(SAMPLED) + 1, seed=21, min_len=2, max_len=14)
    greedy_prompts, sampled_prompts = prompts[:len(STRATEGIES)], prompts[len(STRATEGIES):-1]
    ref = reference(model, greedy_prompts, STRATEGIES, NEW)
    ref_sampled = reference(model, sampled_prompts, [s[0] for s in SAMPLED], NEW, sampling=[s[2] for s in SAMPLED],
                            seed=[s[3] for s in SAMPLED])

    def greedy(spec):
        return {"temperature": 0, "max_new_tokens": NEW, "custom_params": mtp_params(spec)}

    sampled = [{"max_new_tokens": NEW, "sampling_seed": seed, **extra, "custom_params": mtp_params(spec)}
               for spec, extra, _, seed in SAMPLED]
    fallback = {"temperature": 0, "max_new_tokens": 6, "regex": "[a-z]+"}  # SGLang's sampler, plain decoding
    jobs = [
        {"op": "generate", "input_ids": greedy_prompts, "sampling_params": [greedy(s) for s in STRATEGIES]},
        {"op": "staggered", "input_ids": greedy_prompts, "delay": 0.05,
         "sampling_params": [greedy(s) for s in STRATEGIES]},
        {"op": "generate", "input_ids": sampled_prompts + prompts[-1:], "sampling_params": sampled + [fallback]},
        {"op": "flush"},
        {"op": "probe"},
    ]
    data = run_engine(tmp, "tp2", tmp / "ckpt", jobs, mtp={"strategy": "conf_adapt", "threshold": 0.9, "k_max": 4,
                                                           "token_budget": 0},
                      engine={"tp_size": 2}, env={"SGLANG_CPU_OMP_THREADS_BIND": _bind()})
    return dict(res=data["results"], ref=ref, ref_sampled=ref_sampled)


def test_every_strategy_under_tp2_equals_reference(run):
    for spec, got, want in zip(STRATEGIES, output_ids(run["res"][0]), run["ref"]):
        assert got == want, f"{spec} under tp 2: {got} != reference {want}"


def test_staggered_requests_under_tp2_equal_reference(run):
    assert output_ids(run["res"][1]) == run["ref"]


def test_seeded_sampling_and_fallback_under_tp2(run):
    outs = output_ids(run["res"][2])
    assert outs[:len(SAMPLED)] == run["ref_sampled"]
    assert 0 < len(outs[-1]) <= 6


def test_no_kv_slot_leaks_under_tp2(run):
    assert_idle_pool(run["res"][3], run["res"][4])


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tp_auto_engine")
    model, _ = build_checkpoint(tmp / "ckpt")
    prompts = random_prompts(12, seed=22, min_len=2, max_len=14)
    greedy = {"temperature": 0, "max_new_tokens": NEW}
    jobs = [{"op": "generate", "input_ids": prompts[:1], "sampling_params": greedy},  # calibrates
            {"op": "generate", "input_ids": prompts, "sampling_params": greedy},
            {"op": "flush"}, {"op": "probe"}]
    data = run_engine(tmp, "tp2_auto", tmp / "ckpt", jobs, mtp={"strategy": "verify", "k_max": 4,
                                                                "token_budget": "auto"},
                      engine={"tp_size": 2}, env={"SGLANG_CPU_OMP_THREADS_BIND": _bind()})
    return dict(res=data["results"], ref=reference(model, prompts, ["ntp"] * len(prompts), NEW))


def test_auto_budget_under_tp2_stays_lossless(auto_run):
    res = auto_run["res"]
    assert output_ids(res[0]) == auto_run["ref"][:1]
    assert output_ids(res[1]) == auto_run["ref"]
    assert_idle_pool(res[2], res[3])
