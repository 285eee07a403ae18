"""Which CUDA graph sets the worker builds per width, and how a step runs under one
(sglang_mtp/sglang_plugin/width_graphs.py). The captures themselves need a GPU
(README, "Only checkable on a GPU"); the planning and the swap are plain Python."""

from types import SimpleNamespace

import pytest

pytest.importorskip("sglang")

from sglang_mtp.sglang_plugin import width_graphs as wg  # noqa: E402

SGLANG_SIZES = list(range(1, 9)) + list(range(10, 33, 2)) + list(range(40, 65, 4)) + list(range(72, 257, 8))


def test_capped_sizes_keep_the_cap_itself():
    assert wg.capped_sizes(SGLANG_SIZES, 46) == [s for s in SGLANG_SIZES if s <= 46] + [46]
    assert wg.capped_sizes(SGLANG_SIZES, 48)[-1] == 48  # already a size: not repeated
    assert wg.capped_sizes(SGLANG_SIZES, 1000) == SGLANG_SIZES  # nothing to cap
    assert wg.capped_sizes(SGLANG_SIZES, 0) == [1]  # a budget below one request's width


def test_startup_cap_follows_the_budget():
    assert wg.startup_cap(512, 11) == 47
    assert wg.startup_cap(484, 11) == 44
    assert wg.startup_cap(8, 11) == 1
    assert wg.startup_cap(0, 11) is None  # fixed width: SGLang's list unchanged


def test_startup_cap_leaves_room_for_every_narrower_width():
    """The CUDA default, budget 512 at K 8 (full width 15): SGLang's full-width capture sizes
    the shared logits buffer, and every narrower set must still reach budget // w requests
    (at 34 requests the buffer held 510 rows and 73 requests at width 7 ran eagerly)."""
    cap = wg.startup_cap(512, 15)
    assert cap == 35
    plan = wg.plan_sets((1, 3, 7, 15), 15, 512, rows=cap * 15, sizes=SGLANG_SIZES, adaptive=True)
    for mode, w, sizes in plan:
        assert max(sizes) == min(512 // w, 256), (mode, w)


def test_plan_caps_every_width_to_the_budget():
    plan = wg.plan_sets((1, 3, 7, 11), 11, 512, rows=256 * 11, sizes=SGLANG_SIZES, adaptive=True)
    assert [(m, w) for m, w, _ in plan] == [("verify", 7), ("verify", 3), ("verify", 1), ("decode", 1)]
    for mode, w, sizes in plan:
        assert max(sizes) * w <= 512, (mode, w)
        assert max(sizes) == min(512 // w, 256)
    assert dict(((m, w), s) for m, w, s in plan)[("decode", 1)] == SGLANG_SIZES[:SGLANG_SIZES.index(256) + 1]


def test_plan_without_a_budget_fills_the_logits_buffer():
    rows = 46 * 11  # the shared logits buffer SGLang sized for its capture
    plan = wg.plan_sets((1, 3, 7, 11), 11, 0, rows=rows, sizes=SGLANG_SIZES, adaptive=True)
    for _, w, sizes in plan:
        assert max(sizes) * w <= rows


def test_fixed_width_builds_only_the_plain_decode_set():
    plan = wg.plan_sets((1, 3, 7, 11), 11, 0, rows=256 * 11, sizes=SGLANG_SIZES, adaptive=False)
    assert [(m, w) for m, w, _ in plan] == [("decode", 1)]


def test_bound_swaps_runner_and_backend_for_the_forward_only():
    mr = SimpleNamespace(decode_cuda_graph_runner="base runner", attn_backend="base backend")
    graphs = wg.WidthGraphs(mr)
    graphs.sets[("verify", 3)], graphs._base = ("w3 runner", "w3 backend"), "base runner"
    with graphs.bound("verify", 3):
        assert (mr.decode_cuda_graph_runner, mr.attn_backend) == ("w3 runner", "w3 backend")
    assert (mr.decode_cuda_graph_runner, mr.attn_backend) == ("base runner", "base backend")
    with pytest.raises(RuntimeError):
        with graphs.bound("verify", 3):
            raise RuntimeError("a failed forward")
    assert (mr.decode_cuda_graph_runner, mr.attn_backend) == ("base runner", "base backend")
    with graphs.bound("verify", 7):  # no set: the forward runs as SGLang would (eager)
        assert mr.decode_cuda_graph_runner == "base runner"


def test_sets_are_dropped_once_sglang_recaptures_its_graphs():
    # A weight update with recapture gives the model runner a new graph runner (and new graph
    # buffers in its backend): the sets captured against the old ones must not replay again,
    # and SGLang's own width runs under its new runner.
    mr = SimpleNamespace(decode_cuda_graph_runner="base runner", attn_backend="base backend")
    graphs = wg.WidthGraphs(mr)
    graphs.sets[("verify", 3)], graphs._base = ("w3 runner", "w3 backend"), "base runner"
    mr.decode_cuda_graph_runner = "recaptured runner"
    with graphs.bound("verify", 3):
        assert (mr.decode_cuda_graph_runner, mr.attn_backend) == ("recaptured runner", "base backend")
    assert graphs.sets == {}
    with graphs.bound("verify", 11):  # SGLang's own width: its runner as it is now
        assert mr.decode_cuda_graph_runner == "recaptured runner"


def test_no_graph_config_means_nothing_to_cap():
    assert wg.cap_startup_sizes(None) is None


def test_plain_decode_runner_keeps_its_mode():
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    runner = wg.PlainDecodeRunner.__new__(wg.PlainDecodeRunner)  # SGLang's __init__ captures graphs (GPU); the mode is a class property
    runner.capture_forward_mode = ForwardMode.TARGET_VERIFY  # what SGLang assigns on a speculative server
    assert runner.capture_forward_mode == ForwardMode.DECODE


def test_sets_share_one_kv_index_buffer(monkeypatch):
    import torch

    calls = []

    class Backend:
        max_context_len = 5

        def init_cuda_graph_state(self, max_bs, max_num_tokens, kv_indices_buf=None):
            calls.append((max_num_tokens, kv_indices_buf))
            self.cuda_graph_custom_mask = torch.ones(max_num_tokens * self.max_context_len, dtype=torch.uint8)

    monkeypatch.setattr(torch, "zeros", lambda n, dtype=None, device=None: torch.empty(n, dtype=dtype))  # no GPU
    graphs = wg.WidthGraphs(SimpleNamespace())
    a, b = Backend(), Backend()
    graphs.share_kv_indices(a, tokens=12)
    graphs.share_kv_indices(b, tokens=12)
    a.init_cuda_graph_state(4, 12)
    b.init_cuda_graph_state(12, 12)
    (n_a, buf_a), (n_b, buf_b) = calls
    assert buf_a.numel() == 12 * 5 and buf_b.numel() == 12 * 5
    assert buf_a.data_ptr() == buf_b.data_ptr()  # one buffer for every width
    # FlashInfer's custom-mask buffer too (an MTP verify never reads it): one for all sets
    assert a.cuda_graph_custom_mask.data_ptr() == b.cuda_graph_custom_mask.data_ptr()
    assert a.cuda_graph_custom_mask.numel() == 12 * 5 == b.cuda_graph_custom_mask.numel()


def test_extra_sets_skipped_where_sglang_keeps_global_graph_state():
    plain = SimpleNamespace(lora_manager=None)
    assert wg.extras_unsupported(plain, SimpleNamespace()) is None
    assert wg.extras_unsupported(SimpleNamespace(lora_manager=object()), SimpleNamespace()) == "LoRA"
    assert wg.extras_unsupported(plain, SimpleNamespace(enable_two_batch_overlap=True)) == "two-batch overlap"
    assert wg.extras_unsupported(plain, SimpleNamespace(require_mlp_sync=True)) == "data-parallel attention"
    assert wg.extras_unsupported(plain, SimpleNamespace(enable_pdmux=True)) == "PD multiplexing"


def test_extra_captures_set_their_sizes_without_torch_compile_and_restore(monkeypatch):
    import contextlib

    import sglang.srt.runtime_context as rc

    seen = []

    class Graph:
        def __init__(self):
            self.cuda_graph_config = SimpleNamespace(decode=SimpleNamespace(bs=[1, 2, 4, 8]))
            self.torch_compile_max_bs = 32

        def __contains__(self, name):
            return hasattr(self, name)

        @contextlib.contextmanager
        def override(self, **kw):
            saved = {k: getattr(self, k) for k in kw}
            self.__dict__.update(kw)
            try:
                yield
            finally:
                self.__dict__.update(saved)

    graph = Graph()
    monkeypatch.setattr(rc, "get_exec", lambda: SimpleNamespace(graph=graph))
    with wg._capture_sizes([1, 2]):
        seen.append((list(graph.cuda_graph_config.decode.bs), graph.torch_compile_max_bs))
    assert seen == [([1, 2], 0)]
    assert graph.cuda_graph_config.decode.bs == [1, 2, 4, 8] and graph.torch_compile_max_bs == 32
    assert wg.cap_startup_sizes(4) == [1, 2, 4, 8] and graph.cuda_graph_config.decode.bs == [1, 2, 4]


@pytest.mark.parametrize("tp", [1, 2])
def test_build_captures_each_planned_set_and_survives_a_failed_one(monkeypatch, tp):
    # One rank: the failed width runs eagerly. Under TP the other ranks may have captured it,
    # and their collectives would pair with this rank's next capture: the start-up fails.
    import contextlib

    import sglang.srt.utils as sglang_utils

    free = iter([80.0, 79.5, 79.5, 79.4, 79.4, 79.4, 79.3])  # GB before / after each set (width 3: before only)
    monkeypatch.setattr(sglang_utils, "get_available_gpu_memory", lambda device, gpu_id: next(free))
    captured = []

    class Runner:
        def __init__(self, mr, attn_backend=None, speculative_num_draft_tokens=None):
            if speculative_num_draft_tokens == 3:
                raise RuntimeError("capture failed")
            captured.append((type(self).__name__, speculative_num_draft_tokens, mr.attn_backend is attn_backend,
                             list(sizes_now)))

    class Plain(Runner):
        pass

    sizes_now = []

    @contextlib.contextmanager
    def capture_sizes(sizes):
        sizes_now[:] = sizes
        yield

    monkeypatch.setattr(wg, "DecodeCudaGraphRunner", Runner)
    monkeypatch.setattr(wg, "PlainDecodeRunner", Plain)
    monkeypatch.setattr(wg, "_capture_sizes", capture_sizes)
    monkeypatch.setattr(wg.WidthGraphs, "_new_backend", lambda self, width: SimpleNamespace(width=width))
    base = Runner.__new__(Runner)
    mr = SimpleNamespace(decode_cuda_graph_runner=base, attn_backend="base backend", lora_manager=None,
                         device="cuda", gpu_id=0)
    graphs, report = wg.WidthGraphs(mr), {}
    plan = wg.plan_sets((1, 3, 7, 11), 11, 512, rows=506, sizes=SGLANG_SIZES, adaptive=True)
    monkeypatch.setattr(wg, "_tp_size", lambda: tp)
    if tp > 1:
        with pytest.raises(RuntimeError, match="width 3 failed on this rank under tensor parallelism"):
            graphs.build(plan, 11, report)
        return
    graphs.build(plan, 11, report)
    assert [(c[0], c[1]) for c in captured] == [("Runner", 7), ("Runner", 1), ("Plain", 1)]
    assert all(c[2] for c in captured)  # each captured with its own backend bound to the model runner
    assert captured[0][3][-1] == 506 // 7
    assert set(graphs.sets) == {("verify", 7), ("verify", 1), ("decode", 1)}  # width 3 eager, 11 is SGLang's
    assert mr.attn_backend == "base backend" and mr.decode_cuda_graph_runner is base
    assert report["target_verify"] == pytest.approx(0.5 + 0.0) and report["decode"] == pytest.approx(0.1)
    assert graphs.memory_gb[("verify", 7)] == pytest.approx(0.5)
