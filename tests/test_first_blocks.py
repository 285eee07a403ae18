"""A request's first block (the masks that ride its prefill) is capped for the batch it will
decode in: the requests already running plus this prefill's. A block capped for the prefill
alone would make the next decode step of the whole running batch wider than its cap. Nor is a
block wider than the tokens the request may still emit."""

from types import SimpleNamespace

import pytest

pytest.importorskip("sglang")

from sglang_mtp.sglang_plugin.params import RequestPlan  # noqa: E402
from sglang_mtp.sglang_plugin.worker import MTPWorker, tokens_left  # noqa: E402
from sglang_mtp.strategy import MAX_K, Strategy  # noqa: E402
from sglang_mtp.width import WidthPolicy  # noqa: E402

# k_max 4, budget 24: width 7 (cap 4) up to 3 requests, 3 (cap 2) up to 8, then 1 (cap 1).
POLICY = WidthPolicy(4, budget=24)


def first_blocks(rows_in_use, plans, policy=POLICY, narrow=True, pool_size=64, left=None):
    """``MTPWorker._first_blocks`` on a worker whose request pool has ``rows_in_use`` rows taken
    (the running requests and this prefill's); ``left``: the tokens each request may still emit."""
    pool = SimpleNamespace(size=pool_size, available_size=lambda: pool_size - rows_in_use)
    fake = SimpleNamespace(policy=policy, narrow=lambda: narrow, req_to_token_pool=pool)
    return MTPWorker._first_blocks(fake, plans, left)


MTP, PLAIN = RequestPlan(Strategy.static(4), False), RequestPlan(Strategy.ntp(), False)
FALLBACK = RequestPlan(Strategy.ntp(), True)


def test_an_idle_server_caps_by_the_prefill_batch():
    assert first_blocks(1, [MTP]) == ([4], 4)
    assert first_blocks(5, [MTP] * 5) == ([2] * 5, 2)  # rows in use = this prefill's
    assert first_blocks(12, [MTP] * 12) == ([1] * 12, 1)


def test_a_request_joining_a_busy_batch_gets_that_batch_s_cap():
    assert first_blocks(6, [MTP]) == ([2], 2)  # 5 running + 1: width 3
    assert first_blocks(40, [MTP, PLAIN, FALLBACK]) == ([1, 1, 1], 1)  # cap 1: no masks at all


def test_fixed_width_and_plain_batches():
    assert first_blocks(40, [MTP], policy=WidthPolicy(4)) == ([4], MAX_K)  # budget 0: no cap
    assert first_blocks(40, [MTP], narrow=False) == ([4], MAX_K)  # backend runs the full width
    assert first_blocks(40, [PLAIN, FALLBACK])[0] == []  # nothing to ride the prefill


def test_a_block_never_outgrows_the_tokens_the_request_may_still_emit():
    # k 4 at an idle server; 1, 2 and 3 tokens left cap the block (1 = no masks at all)
    assert first_blocks(3, [MTP] * 3, policy=WidthPolicy(4), left=[1, 2, 3]) == ([1, 2, 3], MAX_K)
    assert first_blocks(1, [MTP], left=[100]) == ([4], 4)
    assert first_blocks(2, [MTP, FALLBACK], left=[2, 1]) == ([2, 1], 4)


def test_tokens_left_counts_a_resumed_request_s_output():
    def req(limit, out):
        return SimpleNamespace(sampling_params=SimpleNamespace(max_new_tokens=limit), output_ids=[0] * out)

    assert tokens_left(req(8, 0)) == 8
    assert tokens_left(req(8, 5)) == 3  # retracted after 5 tokens, prefilled again
    assert tokens_left(req(None, 3)) == MAX_K  # no limit: the block is not capped
