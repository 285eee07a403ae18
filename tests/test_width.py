"""Load-adaptive block width (sglang_mtp.width) and the reference decoder's per-pass caps."""

import pytest

from sglang_mtp.decode import generate
from sglang_mtp.width import WidthPolicy, allowed_widths, step_cap
from tests.models import random_prompts, tiny_mtp_model


def test_allowed_widths():
    assert allowed_widths(1) == (1,)
    assert allowed_widths(4) == (1, 3, 7)
    assert allowed_widths(6) == (1, 3, 7, 11)
    assert allowed_widths(8) == (1, 3, 7, 15)


def test_budget_picks_the_widest_width_that_fits():
    p = WidthPolicy(8, budget=120)
    assert [p.target(b) for b in (1, 8, 9, 17, 18, 40, 41)] == [15, 15, 7, 7, 3, 3, 1]
    assert [p.cap(b) for b in (1, 8, 9, 18, 41)] == [8, 8, 4, 2, 1]
    assert WidthPolicy(8).target(10_000) == 15 and WidthPolicy(8).cap(10_000) == 8  # budget 0: fixed
    assert not WidthPolicy(8).adaptive and p.adaptive
    assert "B=16: W=7" in p.describe() and WidthPolicy(8).describe() == "fixed width 15"


def test_table_policy():
    p = WidthPolicy(8, table=((4, 15), (16, 7), (64, 3)))
    assert [p.target(b) for b in (1, 4, 5, 16, 17, 64, 65)] == [15, 15, 7, 7, 3, 3, 1]
    with pytest.raises(ValueError, match="bad width table row"):
        WidthPolicy(8, table=((4, 5),))
    with pytest.raises(ValueError, match="token budget must be >= 0"):
        WidthPolicy(8, budget=-1)


def test_step_width_holds_pending_tokens_and_block():
    p = WidthPolicy(8, budget=64)
    assert p.step_width(1) == 1 and p.step_width(2) == 3 and p.step_width(8) == 15 and p.step_width(99) == 15
    # A first step keeps 2 rows; plain requests 1; others min(k, cap).
    assert step_cap(8, 1, first=True) == 2 and step_cap(1, 4, first=True) == 1 and step_cap(6, 4, False) == 4


@pytest.fixture(scope="module")
def model():
    return tiny_mtp_model("llama", seed=0)


def test_verify_output_never_depends_on_the_policy(model):
    m, mask_id = model
    prompts = random_prompts(6, seed=2, min_len=2, max_len=9)
    plain = [r.tokens for r in generate(m, prompts, "ntp", max_new_tokens=20)]
    for policy in (None, WidthPolicy(8, budget=1), WidthPolicy(8, budget=20), WidthPolicy(8, budget=10_000)):
        out = generate(m, prompts, "verify:8", max_new_tokens=20, width_policy=policy)
        assert [r.tokens for r in out] == plain


def test_caps_bound_every_pass_and_wide_budgets_change_nothing(model):
    m, mask_id = model
    prompts = random_prompts(6, seed=4, min_len=2, max_len=9)
    run = lambda policy=None: generate(m, prompts, "static:8", max_new_tokens=24, stop_token_ids=(),  # noqa: E731
                                       width_policy=policy)
    free, wide = run(), run(WidthPolicy(8, budget=6 * 15))
    assert [r.tokens for r in wide] == [r.tokens for r in free]
    tight = run(WidthPolicy(8, budget=6 * 3))
    for r in tight:  # 6 live requests * width 3: blocks of 2 (the first pass keeps 2 too)
        assert max(r.chunks) <= 2 and r.passes >= 12
    # Budget 1: width 1 for every batch size, i.e. one token per pass after the first pass.
    one = run(WidthPolicy(8, budget=1))
    assert all(r.chunks[0] <= 2 and max(r.chunks[1:]) == 1 for r in one)
