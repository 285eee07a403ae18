"""The worker's per-request state (sglang_plugin/state.py): how requests start after their
prefill and how a step's width is planned from the host mirrors alone."""

import numpy as np
import torch

from sglang_mtp.sglang_plugin.state import MTPState
from sglang_mtp.strategy import Strategy

LAST_PROMPT, T1 = 11, 22


def admitted(strategies, started=None):
    state = MTPState(pool_size=8, width=7, device="cpu")
    idx = np.arange(2, 2 + len(strategies))
    n = len(strategies)
    state.admit(torch.from_numpy(idx), idx, strategies, [False] * n, torch.full((n,), LAST_PROMPT),
                torch.full((n,), T1), started=started)
    return state, idx


def test_mtp_requests_start_with_a_first_step_that_refeeds_the_prompt():
    state, idx = admitted([Strategy.conf_adapt(0.9, 4), Strategy.ntp()])
    assert state.pending[idx, 0].tolist() == [LAST_PROMPT, T1]
    assert state.first[idx].tolist() == [True, False] and state.host_first[idx].tolist() == [True, False]
    assert state.k[idx].tolist() == [4, 1]


def test_a_request_whose_prefill_was_its_first_block_starts_from_t1_and_keeps_its_k():
    state, idx = admitted([Strategy.static(4), Strategy.verify(4)], started=[True, False])
    assert state.pending[idx, 0].tolist() == [T1, LAST_PROMPT]
    assert state.first[idx].tolist() == [False, True] and state.host_first[idx].tolist() == [False, True]
    assert state.k[idx].tolist() == [4, 4]  # MTP again once the load allows it


def test_first_steps_need_two_rows_above_cap_one():
    state, idx = admitted([Strategy.static(4), Strategy.ntp()])
    assert state.plan_step(idx, cap=2) == 2  # [x_{P-1}, mask]: width 3
    assert state.host_first[idx].tolist() == [True, False]  # plan_step only plans


def test_at_cap_one_first_steps_start_plainly_and_the_step_is_one_row_wide():
    state, idx = admitted([Strategy.static(4), Strategy.verify(4), Strategy.ntp()])
    assert state.plan_step(idx, cap=1) == 1
    assert state.pending[idx, 0].tolist() == [T1, T1, T1]
    assert not state.first[idx].any() and not state.host_first[idx].any()
    assert state.k[idx].tolist() == [4, 4, 1]
    # The next step, with room again, gives them blocks of up to k.
    assert state.plan_step(idx, cap=4) == 4
