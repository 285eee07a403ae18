"""A real SGLang Engine on CPU with ``--decode-mode mtp``: token-for-token against the
reference decoder, in one Engine start (server default conf_adapt tau 0.9, k_max 4; every
other strategy through per-request ``custom_params``; overlap scheduling on).
"""

from __future__ import annotations

import re

import pytest

from tests.models import random_prompts, tiny_tokenizer
from sglang_mtp.decode import generate
from tests.sglang.harness import assert_idle_pool, build_checkpoint, mtp_params, output_ids, reference, run_engine

K_MAX = 4
NEW = 24
# Every strategy the Engine must reproduce; all served by one batch (one Engine).
STRATEGIES = ["ntp", "static:2", "static:4", "conf_adapt:0:4", "conf_adapt:0.5:4", "conf_adapt:0.9:4",
              "conf_adapt:1:3", "conf_adapt:0.7:2", "verify:4", "verify:2", "ntp"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtp_engine")
    model, mask_id = build_checkpoint(tmp / "ckpt")
    prompts = random_prompts(len(STRATEGIES), seed=3, min_len=2, max_len=14)
    ref = reference(model, prompts, STRATEGIES, NEW)
    # Stop token: a token in the middle of a lossy output; prefix test: prompt extended by
    # a finished request's whole output (its last tokens had mask-input KV at first).
    stop_tok = ref[2][5]
    ref_stop = reference(model, [prompts[2]], ["static:4"], NEW, stop_token_ids=[2, stop_tok])[0]
    pa = prompts[4]
    ref_a_full = generate(model, [pa], strategy="static:4", max_new_tokens=11)[0]
    ref_a = ref_a_full.tokens
    # Positions with real-token KV when A ends: the prompt and every token fed back as an
    # input, i.e. all but the last pass's tokens (those were predicted at mask positions).
    a_real_kv = len(pa) + sum(ref_a_full.chunks[:-1])  # chunks[i]: tokens emitted by pass i
    pb = pa + ref_a + prompts[0][:3]
    ref_b = reference(model, [pb], ["static:4"], NEW)[0]
    # (strategy, max_new_tokens): a first block is capped by the tokens the request may emit
    budgets = [("static:4", 1), ("static:4", 2), ("static:4", 5), ("verify:4", 2), ("verify:4", 3),
               ("conf_adapt:0.5:4", 3)]
    ref_budget = [reference(model, [prompts[1]], [s], b)[0] for s, b in budgets]
    long_prompt = random_prompts(1, seed=5, min_len=248, max_len=248)[0]  # context is 256
    ref_long = reference(model, [long_prompt] * 2, ["static:4", "verify:4"], 8)
    stagger = ["verify:4", "static:4", "conf_adapt:0.5:4", "ntp"]
    ref_stagger = reference(model, prompts[:4], stagger, NEW)

    def greedy(n, params=None, **kw):
        return {"temperature": 0, "max_new_tokens": n, **({"custom_params": params} if params else {}), **kw}

    jobs = [
        {"op": "probe"},  # 0: idle accounting before any request
        {"op": "generate", "input_ids": prompts,  # 1: every strategy in one batch
         "sampling_params": [greedy(NEW, _params(i, s)) for i, s in enumerate(STRATEGIES)]},
        {"op": "staggered", "input_ids": prompts[:4], "delay": 0.1,  # 2
         "sampling_params": [greedy(NEW, mtp_params(s)) for s in stagger]},
        {"op": "generate", "input_ids": [prompts[2]],  # 3: stop token
         "sampling_params": greedy(NEW, mtp_params("static:4"), stop_token_ids=[stop_tok])},
        {"op": "generate", "input_ids": [prompts[1]] * len(budgets),  # 4: max_new_tokens
         "sampling_params": [greedy(b, mtp_params(s)) for s, b in budgets]},
        {"op": "flush"},  # 5: so that request B can only reuse request A's KV
        {"op": "generate", "input_ids": [pa], "sampling_params": greedy(11, mtp_params("static:4"))},  # 6
        {"op": "generate", "input_ids": [pb], "sampling_params": greedy(NEW, mtp_params("static:4"))},  # 7
        {"op": "generate", "input_ids": [prompts[3]], "return_logprob": True,  # 8: logprobs
         "sampling_params": greedy(NEW, mtp_params("static:4"))},
        {"op": "generate", "input_ids": [prompts[3]], "sampling_params": greedy(8, {"mtp": {"threshold": 2}})},
        {"op": "generate", "input_ids": [prompts[3]], "sampling_params": greedy(8, {"mtp": {"k_max": 99}})},
        {"op": "generate", "input_ids": [prompts[3]], "sampling_params": greedy(8, {"mtp": "yes"})},  # 11
        {"op": "generate", "input_ids": [prompts[5], prompts[6]],  # 12: sampler fallbacks
         "sampling_params": [{"temperature": 0.8, "max_new_tokens": 12, "sampling_seed": 1},
                             {"temperature": 0, "max_new_tokens": 6, "regex": "[a-z]+"}]},
        {"op": "generate", "input_ids": prompts[:3],  # 13: plain requests only (1-wide forward)
         "sampling_params": greedy(NEW, {"mtp": False})},
        {"op": "generate", "input_ids": [long_prompt] * 2,  # 14: blocks reaching past the context
         "sampling_params": [greedy(8, mtp_params(s)) for s in ("static:4", "verify:4")]},
        {"op": "flush"},
        {"op": "probe"},  # 16: idle accounting after everything
        # 17-18: a prefill whose requests all end with t1 writes no MTP state; the requests
        # that take their pool rows next get their own
        {"op": "generate", "input_ids": prompts[:4], "sampling_params": greedy(1, mtp_params("verify:4"))},
        {"op": "generate", "input_ids": prompts[:4],
         "sampling_params": [greedy(NEW, mtp_params(s)) for s in stagger]},
    ]
    # --mtp-token-budget 0: the fixed width 2*k_max-1, no cap (the deterministic choice), so
    # every lossy output equals the uncapped reference decoder (test_engine_width.py: adaptive).
    data = run_engine(tmp, "mtp", tmp / "ckpt", jobs, mtp={"strategy": "conf_adapt", "threshold": 0.9,
                                                          "k_max": K_MAX, "token_budget": 0})
    return dict(res=data["results"], ref_long=ref_long, a_real_kv=a_real_kv, ref=ref, ref_stop=ref_stop, stop_tok=stop_tok, ref_a=ref_a, ref_b=ref_b,
                pb=pb, ref_budget=ref_budget, ref_stagger=ref_stagger, prompts=prompts, model=model)


def _params(i, spec):
    # The server default needs no custom_params; the last "ntp" asks for k_max 1 instead.
    if spec == "conf_adapt:0.9:4":
        return None
    return {"mtp": {"k_max": 1}} if i == len(STRATEGIES) - 1 else mtp_params(spec)


def test_every_strategy_in_one_batch_equals_reference(run):
    got = output_ids(run["res"][1])
    for spec, g, r in zip(STRATEGIES, got, run["ref"]):
        assert g == r, f"{spec}: engine {g} != reference {r}"
    # The comparison is meaningful: lossy strategies really diverge from greedy decoding.
    greedy = reference(run["model"], run["prompts"], ["ntp"] * len(STRATEGIES), NEW)
    lossy = [i for i, s in enumerate(STRATEGIES) if s.startswith(("static", "conf_adapt:0:", "conf_adapt:0.5"))]
    assert any(run["ref"][i] != greedy[i] for i in lossy)


def test_staggered_concurrent_requests_equal_reference(run):
    assert output_ids(run["res"][2]) == run["ref_stagger"]


def test_stop_token_ends_output_inclusive(run):
    got = output_ids(run["res"][3])[0]
    assert got == run["ref_stop"]
    assert got[-1] == run["stop_tok"] and run["stop_tok"] not in got[:-1]


def test_max_new_tokens_cuts_output(run):
    got = output_ids(run["res"][4])
    assert got == run["ref_budget"]
    assert [len(g) for g in got] == [1, 2, 5, 2, 3, 3]


def test_prefix_cache_never_serves_mask_input_kv(run):
    # Request B's prompt is request A's prompt + A's whole output: with the radix cache on, B
    # reuses A's KV; the tokens A emitted last had mask-input KV in the slots at first. B must
    # equal the reference (which has no cache), and the cache must actually have been used.
    assert output_ids(run["res"][6])[0] == run["ref_a"]
    out_b = run["res"][7]["outputs"][0]
    assert out_b["output_ids"] == run["ref_b"]
    # The cache serves exactly A's real-token KV: not one position whose KV came from <MTP>.
    assert out_b["cached_tokens"] == run["a_real_kv"] > len(run["pb"]) - len(run["ref_a"]) - 3


def test_logprobs_for_every_emitted_token(run):
    out = run["res"][8]["outputs"][0]
    assert out["output_ids"] == reference(run["model"], [run["prompts"][3]], ["static:4"], NEW)[0]
    lp = out["logprobs"]
    assert [t for _, t in lp] == out["output_ids"]
    assert all(v <= 0.0 for v, _ in lp) and any(v < -1e-4 for v, _ in lp)


@pytest.mark.parametrize("job, field", [(9, "threshold"), (10, "k_max"), (11, "must be a dict")])
def test_bad_custom_params_rejected_for_that_request(run, job, field):
    err = run["res"][job].get("error", "")
    assert "custom_params" in err and field in err, err


def test_batch_of_plain_requests_equals_reference(run):
    assert output_ids(run["res"][13]) == reference(run["model"], run["prompts"][:3], ["ntp"] * 3, NEW)


def test_blocks_near_the_context_end(run):
    # SGLang itself stops a request a few positions before the context end (its own length
    # cap); up to there the tokens must match, and the last blocks' padding masks lay past
    # the last position (clamped position ids).
    for got, ref in zip(output_ids(run["res"][14]), run["ref_long"]):
        assert len(got) >= 6 and got == ref[: len(got)]


def test_sampling_and_grammar_fall_back_to_plain_decoding(run):
    sampled, constrained = run["res"][12]["outputs"]
    assert 1 <= len(sampled["output_ids"]) <= 12
    text = tiny_tokenizer().decode(constrained["output_ids"])
    assert re.fullmatch("[a-z]+", text), text


def test_forward_passes_reported_per_request(run):
    # meta_info["mtp_forward_passes"] counts the prefill and every decode pass a request took
    # part in. The masks ride the prefill, whose forward is the reference decoder's first
    # pass, so an MTP request takes exactly as many passes as the reference decoder (its
    # effective k is the reference's); a plain request takes one pass per token.
    outs = run["res"][1]["outputs"]
    ref = generate(run["model"], run["prompts"], strategy=list(STRATEGIES), max_new_tokens=NEW)
    for i, (spec, o, r) in enumerate(zip(STRATEGIES, outs, ref)):
        plain = spec == "ntp"
        assert o["forward_passes"] == (len(o["output_ids"]) if plain else len(r.chunks)), (i, spec)
    by_spec = dict(zip(STRATEGIES, outs))
    static2, static4 = (len(by_spec[s]["output_ids"]) / by_spec[s]["forward_passes"] for s in ("static:2", "static:4"))
    assert static2 == 2.0 and static4 == 4.0, (static2, static4)
    # Batches of plain requests only (SGLang's plain decode path): one token per pass (the
    # outputs may stop early at EOS).
    plain_batch = run["res"][13]["outputs"]
    assert [o["forward_passes"] for o in plain_batch] == [len(o["output_ids"]) for o in plain_batch]


def test_no_kv_slot_leaks(run):
    assert_idle_pool(run["res"][15], run["res"][16], before=run["res"][0])


def test_requests_that_end_at_their_prefill_leave_the_next_ones_right(run):
    assert output_ids(run["res"][17]) == [r[:1] for r in run["ref_stagger"]]
    assert output_ids(run["res"][18]) == run["ref_stagger"]
