"""Streaming sessions (``--enable-streaming-session``) in a real SGLang Engine on CPU: each
turn continues the session's KV, and decodes like the reference decoder run on the whole
context (every earlier prompt and output, then the turn's prompt), for every strategy.

A streaming session keeps a finished turn's KV for the next one. On an MTP server it used to
keep it up to the allocated length, which runs past the real KV (a decode step's reserve holds
mask-input KV or nothing), and turns after the first decoded differently, plain requests
included (``commit.session_keeps_real_kv``).
"""

from __future__ import annotations

import pytest

from tests.models import random_prompts
from tests.sglang.harness import assert_idle_pool, build_checkpoint, mtp_params, output_ids, reference, run_engine

NEW = 10
TURNS = 4
STRATEGIES = ["verify:3", "conf_adapt:0.5:3", "static:2", "ntp"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("session")
    model, _ = build_checkpoint(tmp / "ckpt")
    turns = random_prompts(TURNS, seed=5)
    jobs = [{"op": "probe"}]
    for spec in STRATEGIES:
        params = {"temperature": 0, "max_new_tokens": NEW, "custom_params": mtp_params(spec)}
        jobs.append({"op": "session", "turns": turns, "sampling_params": [params] * TURNS})
    jobs += [{"op": "flush"}, {"op": "probe"}]
    data = run_engine(tmp, "session", tmp / "ckpt", jobs, engine={"enable_streaming_session": True},
                      mtp={"strategy": "conf_adapt", "threshold": 0.5, "k_max": 3})
    return dict(model=model, turns=turns, res=data["results"])


@pytest.mark.parametrize("i, spec", list(enumerate(STRATEGIES)))
def test_every_turn_decodes_like_the_reference_on_the_whole_context(run, i, spec):
    context = []
    for turn, (prompt, got) in enumerate(zip(run["turns"], output_ids(run["res"][1 + i]))):
        context = context + prompt
        assert got == reference(run["model"], [context], [spec], NEW)[0], (spec, turn)
        context = context + got


def test_no_kv_slot_leaks_after_sessions(run):
    assert_idle_pool(run["res"][-2], run["res"][-1], before=run["res"][0])
