"""Prompts prefilled in chunks (``--chunked-prefill-size 32``, prompts of 40-200 tokens) in a
real SGLang Engine on CPU: only a prompt's last chunk carries the masks
(``prefill_masks.mask_counts``); outputs equal the reference decoder's, alone and with chunked
prefills arriving while other requests decode, and no KV slot leaks.
"""

from __future__ import annotations

import pytest

from tests.models import random_prompts
from tests.sglang.harness import assert_idle_pool, build_checkpoint, mtp_params, output_ids, reference, run_engine

CHUNK = 32
NEW = 24
LENGTHS = [40, 70, 100, 150, 200]
STRATEGIES = ["static:4", "verify:4", "conf_adapt:0.9:4", "ntp"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chunked")
    model, _ = build_checkpoint(tmp / "ckpt")
    cases = [(random_prompts(1, seed=20 + n, min_len=n, max_len=n)[0], s) for n in LENGTHS for s in STRATEGIES]
    short = [(p, "static:4") for p in random_prompts(6, seed=99, min_len=3, max_len=10)]
    mixed = cases[:8] + short  # chunked prefills arriving while short requests decode

    def params(group):
        return [{"temperature": 0, "max_new_tokens": NEW, "custom_params": mtp_params(s)} for _, s in group]

    jobs = [{"op": "server_info", "keys": ["chunked_prefill_size"]}, {"op": "probe"},
            {"op": "generate", "input_ids": [p for p, _ in cases], "sampling_params": params(cases)},
            {"op": "staggered", "input_ids": [p for p, _ in mixed], "delay": 0.05, "sampling_params": params(mixed)},
            {"op": "flush"}, {"op": "probe"}]
    data = run_engine(tmp, "chunked", tmp / "ckpt", jobs, engine={"chunked_prefill_size": CHUNK},
                      mtp={"strategy": "conf_adapt", "threshold": 0.9, "k_max": 4, "token_budget": 0})
    ref = {(tuple(p), s): reference(model, [p], [s], NEW)[0] for p, s in cases + short}
    return dict(res=data["results"], cases=cases, mixed=mixed, ref=ref)


def test_the_engine_prefills_in_chunks(run):
    assert run["res"][0] == {"chunked_prefill_size": CHUNK}


@pytest.mark.parametrize("job, group", [(2, "cases"), (3, "mixed")])
def test_chunked_prompts_decode_like_the_reference(run, job, group):
    for (prompt, spec), got in zip(run[group], output_ids(run["res"][job])):
        assert got == run["ref"][(tuple(prompt), spec)], (len(prompt), spec)


def test_no_kv_slot_leaks_with_chunked_prefill(run):
    assert_idle_pool(run["res"][4], run["res"][5], before=run["res"][1])
