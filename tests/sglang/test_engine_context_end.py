"""Requests that decode up to the end of the context, with wide blocks (k_max 8, W 15), in a
real SGLang Engine on CPU, greedy and sampled: the server survives, outputs equal the
reference decoder's, and no KV slot leaks.

Each speculative decode step reserves a request's slots up to its committed length + 2W, and
SGLang's rows of the request-to-token table were only W + 4 past the context: a request
committed past ``context + 4 - W`` (245 tokens here) took the server down
(``sglang_plugin/headroom.py``). A prompt within its block of the context end keeps its masks
out of the prefill (``prefill_masks.mask_counts``): here 249 tokens with k 8.
"""

from __future__ import annotations

import pytest

from tests.models import random_prompts
from tests.sglang.harness import assert_idle_pool, build_checkpoint, mtp_params, output_ids, reference, run_engine

CONTEXT = 256  # the tiny checkpoint's max_position_embeddings
LENGTHS = [236, 240, 245, 248, 249]  # SGLang takes prompts up to 249 tokens on this context
STRATEGIES = ["static:8", "verify:8", "conf_adapt:0.9:8"]
SAMPLING, SEED = {"temperature": 0.8, "top_p": 0.9}, 7  # the sampled job: the same requests, seeded


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("context_end")
    model, _ = build_checkpoint(tmp / "ckpt")
    assert model.config.max_position_embeddings == CONTEXT
    prompts = [random_prompts(1, seed=10 + n, min_len=n, max_len=n)[0] for n in LENGTHS]
    cases = [(p, s) for p in prompts for s in STRATEGIES]
    params = [{"temperature": 0, "max_new_tokens": CONTEXT - len(p), "custom_params": mtp_params(s)}
              for p, s in cases]
    sampled = [{**sp, **SAMPLING, "sampling_seed": SEED} for sp in params]
    jobs = [{"op": "probe"},
            {"op": "generate", "input_ids": [p for p, _ in cases], "sampling_params": params},
            {"op": "generate", "input_ids": [p for p, _ in cases], "sampling_params": sampled},
            {"op": "flush"}, {"op": "probe"}]
    data = run_engine(tmp, "context_end", tmp / "ckpt", jobs,
                      mtp={"strategy": "conf_adapt", "threshold": 0.9, "k_max": 8, "token_budget": 0})
    refs = [reference(model, [p], [s], CONTEXT - len(p))[0] for p, s in cases]
    sampled_refs = [reference(model, [p], [s], CONTEXT - len(p), sampling=SAMPLING, seed=SEED)[0] for p, s in cases]
    return dict(res=data["results"], cases=cases, refs={1: refs, 2: sampled_refs})


@pytest.mark.parametrize("job", [1, 2], ids=["greedy", "sampled"])
def test_requests_decode_to_the_context_end_like_the_reference(run, job):
    got = output_ids(run["res"][job])
    for (prompt, spec), g, ref in zip(run["cases"], got, run["refs"][job]):
        # SGLang ends a request two positions before the context end (its own length cap),
        # unless it samples an end token first.
        assert len(g) >= min(len(ref), CONTEXT - len(prompt) - 2), (len(prompt), spec, g, ref)
        assert g == ref[:len(g)], (len(prompt), spec, g, ref)


def test_no_kv_slot_leaks_at_the_context_end(run):
    assert_idle_pool(run["res"][3], run["res"][4], before=run["res"][0])
