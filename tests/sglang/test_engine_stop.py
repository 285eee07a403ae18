"""Text stop strings on an MTP server (a real SGLang Engine on CPU): a step emits several
tokens, and a stop string that ends inside a step's block must still end the output where it
ends on a plain request, with the block's later tokens dropped.
"""

from __future__ import annotations

import pytest

from tests.models import SPECIALS, random_prompts, tiny_tokenizer
from tests.sglang.harness import assert_idle_pool, build_checkpoint, mtp_params, output_ids, reference, run_engine

NEW = 24
STRATEGIES = ["static:4", "verify:4", "conf_adapt:0.9:4", "conf_adapt:0.5:4", "ntp"]


def stop_string(tokens, tok):
    """Two printable characters from the middle of ``tokens``, the first such pair from
    position 6 on (the tiny tokenizer has one token per character)."""
    for i in range(6, len(tokens) - 1):
        pair = tokens[i:i + 2]
        if min(pair) >= len(SPECIALS) and tok.decode(pair).strip() == tok.decode(pair):
            return tok.decode(pair)
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stop")
    model, _ = build_checkpoint(tmp / "ckpt")
    tok = tiny_tokenizer()
    prompts = random_prompts(6, seed=12, min_len=4, max_len=12)
    cases = []
    for spec in STRATEGIES:
        for p in prompts:
            full = reference(model, [p], [spec], NEW, stop_token_ids=())[0]
            stop = stop_string(full, tok)
            if stop is not None:
                cases.append((p, spec, stop, full))
    jobs = [{"op": "generate", "input_ids": [c[0] for c in cases], "sampling_params": [
                {"temperature": 0, "max_new_tokens": NEW, "stop": [stop], "custom_params": mtp_params(spec)}
                for _, spec, stop, _ in cases]},
            {"op": "flush"}, {"op": "probe"}]
    data = run_engine(tmp, "stop", tmp / "ckpt", jobs, mtp={"strategy": "conf_adapt", "threshold": 0.9, "k_max": 4})
    return dict(res=data["results"], cases=cases, tok=tok)


def test_every_strategy_has_stop_cases(run):
    assert {spec for _, spec, _, _ in run["cases"]} == set(STRATEGIES)


def test_output_ends_with_the_first_occurrence_of_the_stop_string(run):
    tok = run["tok"]
    for (prompt, spec, stop, full), got in zip(run["cases"], output_ids(run["res"][0])):
        text = tok.decode(full)
        end = text.index(stop) + len(stop)  # SGLang keeps the stop string's tokens in output_ids
        assert tok.decode(got) == text[:end], (spec, stop, tok.decode(got), text)


def test_no_kv_slot_leaks_with_stop_strings(run):
    assert_idle_pool(run["res"][1], run["res"][2])
