"""A request's first block (the masks that ride its prefill) is capped for the batch it will
decode in: the requests already running plus this prefill's. A block capped for the prefill
alone would make the next decode step of the whole running batch wider than its cap."""

from types import SimpleNamespace

import pytest

pytest.importorskip("sglang")

from sglang_mtp.sglang_plugin.params import RequestPlan  # noqa: E402
from sglang_mtp.sglang_plugin.worker import MTPWorker  # noqa: E402
from sglang_mtp.strategy import MAX_K, Strategy  # noqa: E402
from sglang_mtp.width import WidthPolicy  # noqa: E402

# k_max 4, budget 24: width 7 (cap 4) up to 3 requests, 3 (cap 2) up to 8, then 1 (cap 1).
POLICY = WidthPolicy(4, budget=24)


def first_blocks(rows_in_use, plans, policy=POLICY, narrow=True, pool_size=64):
    """``MTPWorker._first_blocks`` on a worker whose request pool has ``rows_in_use`` rows taken
    (the running requests and this prefill's)."""
    pool = SimpleNamespace(size=pool_size, available_size=lambda: pool_size - rows_in_use)
    fake = SimpleNamespace(policy=policy, narrow=lambda: narrow, req_to_token_pool=pool)
    return MTPWorker._first_blocks(fake, plans)


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
