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
    # min(k, cap), first blocks included: at cap 1 a request decodes plainly from its first token.
    assert step_cap(8, 1) == 1 and step_cap(1, 4) == 1 and step_cap(6, 4) == 4 and step_cap(3, 8) == 3


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
    for r in tight:  # 6 live requests * width 3: blocks of 2
        assert max(r.chunks) <= 2 and r.passes >= 12
    # Budget 1: width 1 for every batch size, the first pass included (a plain prefill): one
    # token per pass, which is plain greedy decoding.
    one = run(WidthPolicy(8, budget=1))
    assert all(r.chunks == [1] * 24 for r in one)
    greedy = generate(m, prompts, "ntp", max_new_tokens=24, stop_token_ids=())
    assert [r.tokens for r in one] == [r.tokens for r in greedy]


def test_auto_policy_picks_the_most_tokens_per_second():
    from sglang_mtp.width import AutoWidthPolicy

    # Forward cost: flat while batch * width is small, then linear in the query tokens.
    costs = {b: {w: 1.0 + max(0, b * w - 32) / 16 for w in (1, 3, 7)} for b in (1, 4, 16, 64)}
    p = AutoWidthPolicy(4, costs)
    assert p.target(1) == 7 and p.target(4) == 7  # 28 tokens: free
    assert p.target(64) == 1  # every width costs in proportion to its tokens: blocks do not pay
    assert p.target(3) == p.target(4) and p.target(1000) == p.target(64)  # next measured size up
    # Blocks of 4 that only yield 1.2 tokens per step: the untried cap 2 (optimistic: 2 tokens)
    # wins; once it has yielded 1.1 tokens, width 7 is back where it costs no more.
    for _ in range(60):
        p.observe(4, [1, 1, 2, 1, 1])
    assert p.target(1) == 3 and p.cap(1) == 2
    for _ in range(60):
        p.observe(2, [1, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    assert p.target(1) == 7 and p.target(16) == 1
    assert "B=16: W=1" in p.describe()
    with pytest.raises(ValueError, match="every width"):
        AutoWidthPolicy(4, {1: {1: 1.0, 3: 1.0}})


def test_auto_policy_never_takes_more_rows_than_its_bound():
    from sglang_mtp.width import AutoWidthPolicy

    # Width 7 is the best at every measured size, the largest being 64 (448 rows): batches past
    # it reuse those costs, but 100 x 7 = 700 rows are past a 512-row bound (the graphs'
    # logits buffer on a GPU), so width 3 (300 rows) is chosen, and width 1 at 200 requests.
    costs = {b: {1: 1.0, 3: 1.0, 7: 1.0} for b in (1, 16, 64)}
    bounded, free = AutoWidthPolicy(4, costs, max_tokens=512), AutoWidthPolicy(4, costs)
    assert bounded.target(64) == free.target(64) == 7
    assert (bounded.target(100), bounded.target(200), free.target(200)) == (3, 1, 7)


def test_calibration_rows_follow_the_graphs_logits_buffer():
    pytest.importorskip("sglang")
    from types import SimpleNamespace

    from sglang_mtp.sglang_plugin.calibrate import MAX_ROWS as CALIBRATION_ROWS
    from sglang_mtp.sglang_plugin.worker import calibration_rows

    assert calibration_rows(SimpleNamespace(graph_shared_output=SimpleNamespace(max_rows=510))) == 510
    assert calibration_rows(SimpleNamespace(graph_shared_output=None)) == CALIBRATION_ROWS  # no graphs (CPU)
    assert calibration_rows(SimpleNamespace(graph_shared_output=SimpleNamespace(max_rows=10**6))) == CALIBRATION_ROWS


def test_calibration_batch_sizes():
    pytest.importorskip("sglang")  # the calibration runs inside SGLang
    from sglang_mtp.sglang_plugin.calibrate import batch_sizes

    assert batch_sizes(1) == [1] and batch_sizes(48) == [1, 2, 4, 8, 16, 32, 48] and batch_sizes(64)[-2:] == [32, 64]


def _timed_worker(cost):
    """A fake worker whose dummy forward of B requests at width W takes cost(B, W) seconds on a
    fake clock. Returns (worker, clock, forwards run)."""
    import contextlib
    from types import SimpleNamespace

    now, forwards = [0.0], []

    def forward(shape, is_verify):
        forwards.append(shape)
        now[0] += cost(*shape)

    worker = SimpleNamespace(device="cpu", graphs=SimpleNamespace(bound=lambda mode, w: contextlib.nullcontext()),
                             _target_worker=SimpleNamespace(forward_batch_generation=forward))
    return worker, (lambda: now[0]), forwards


def test_calibration_under_tp_takes_rank_zeros_timings(monkeypatch):
    # Each rank times its own dummy forwards; under TP they must all run the same forwards
    # (collectives) and pick the same widths, so every batch size's row comes from rank 0.
    # This rank measures nothing but fast forwards yet must stop where rank 0's slow width-1
    # forward stops it, and keep rank 0's numbers (inf = a width never run).
    import torch

    pytest.importorskip("sglang")  # the calibration runs inside SGLang
    from sglang_mtp.sglang_plugin import calibrate

    worker, clock, forwards = _timed_worker(lambda B, W: 0.001)
    monkeypatch.setattr(calibrate, "_dummy", lambda worker, template, B, W: (lambda: (B, W)))
    rank0 = {1: [0.001, 0.002, -1], 2: [0.3, 0.5, -1]}  # seconds per width 1, 3, 7 (-1 = inf)
    sent = []

    def broadcast(t):  # what this rank receives from rank 0
        assert t.dtype == torch.int64
        if t.numel() == 1:  # the count of timed runs of one forward: rank 0's, 1 as here
            return
        sent.append(t.tolist())
        t.copy_(torch.tensor([-1 if s < 0 else round(s * 1e9) for s in rank0[len(sent)]]))  # B = 1, then 2

    costs = calibrate.measure(worker, None, (1, 3, 7), 64, reps=1, max_tokens=6, max_seconds=0.25,
                              broadcast=broadcast, clock=clock)
    assert sorted(costs) == [1, 2]  # rank 0's 0.3 s width-1 forward at B=2 ends the sweep
    assert costs[1] == {1: 0.001, 3: 0.002, 7: float("inf")}
    assert costs[2] == {1: 0.3, 3: 0.5, 7: float("inf")}
    assert sent[0][2] == -1  # this rank's own row went out with its never-run width as -1
    assert {(b, w) for b, w in forwards} == {(1, 1), (1, 3), (2, 1), (2, 3)}
    # One rank: its own timings, untouched.
    alone = calibrate.measure(worker, None, (1, 3), 2, reps=1, max_seconds=10.0, clock=clock)
    assert sorted(alone) == [1, 2] and all(alone[b][w] == pytest.approx(0.001) for b in alone for w in (1, 3))


@pytest.mark.parametrize("rank0_runs", [1, 3])
def test_calibration_under_tp_times_each_forward_as_often_as_rank_zero(monkeypatch, rank0_runs):
    # Whether a forward is timed once or `reps` times depends on how long its warm-up took,
    # which differs between ranks; under TP the counts must agree (each forward holds
    # collectives: a rank with one forward more hangs or crashes its peers, as a fresh-clone
    # TP=2 test run did). This rank's warm-ups take 0.2 s (over `slow`, so 1 run alone), its
    # timed forwards 0.001 s; rank 0 decides.
    import torch

    pytest.importorskip("sglang")  # the calibration runs inside SGLang
    from sglang_mtp.sglang_plugin import calibrate

    warm = set()

    def cost(B, W):
        first = (B, W) not in warm
        warm.add((B, W))
        return 0.2 if first else 0.001

    worker, clock, forwards = _timed_worker(cost)
    monkeypatch.setattr(calibrate, "_dummy", lambda worker, template, B, W: (lambda: (B, W)))
    counts = []

    def broadcast(t):
        if t.numel() == 1:
            counts.append(int(t))
            t.fill_(rank0_runs)

    calibrate.measure(worker, None, (1, 3), 2, reps=3, max_seconds=10.0, broadcast=broadcast, clock=clock)
    assert counts == [1, 1, 1, 1]  # this rank alone would time each forward once
    runs = {shape: forwards.count(shape) for shape in set(forwards)}
    assert runs == {shape: 1 + rank0_runs for shape in ((1, 1), (1, 3), (2, 1), (2, 3))}
    assert calibrate.rank0_int(5, None, "cpu") == 5


def test_calibration_stops_after_two_batch_sizes_where_no_width_pays(monkeypatch):
    pytest.importorskip("sglang")  # the calibration runs inside SGLang
    from sglang_mtp.sglang_plugin import calibrate

    monkeypatch.setattr(calibrate, "_dummy", lambda worker, template, B, W: (lambda: (B, W)))
    # A forward of 1 row is cheap (a matrix-vector product), so at B=1 no width pays; at
    # B=2..8 width 3 does; from B=16 on the forward is compute-bound and no width pays.
    def cost(B, W):
        if B == 1:
            return {1: 0.010, 3: 0.030, 7: 0.045}[W]
        return 0.018 + 0.001 * B * W if B < 16 else 0.005 * B * W

    worker, clock, forwards = _timed_worker(cost)
    costs = calibrate.measure(worker, None, (1, 3, 7), 256, reps=3, max_seconds=10.0, clock=clock)
    assert sorted(costs) == [1, 2, 4, 8, 16, 32]  # B=1 alone did not stop it; 16 and 32 did
    assert not any(calibrate.can_pay(costs[1], w) for w in (3, 7)) and calibrate.can_pay(costs[2], 3)
    assert not any(calibrate.can_pay(costs[b], w) for b in (16, 32) for w in (3, 7))
    assert costs[4][3] == pytest.approx(cost(4, 3))
    # Each (B, W): a warm-up and 3 timed forwards, or 1 once the warm-up took over 0.05 s.
    runs = {shape: forwards.count(shape) for shape in set(forwards)}
    assert runs[(1, 1)] == 4 and runs[(32, 7)] == 2
