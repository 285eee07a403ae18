"""The plugin's pieces without starting an Engine: loading, flags, per-request parameters,
the committed-length correction, the CPU shims."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib.metadata import entry_points
from types import SimpleNamespace

import pytest
import torch

from tests.sglang.harness import REPO  # noqa: F401  (skips the module without SGLang)

from sglang_mtp.sglang_plugin import (  # noqa: E402
    commit, cpu_shims, flags, graphs, headroom, metrics, params, register, spec, verify_mask)
from sglang_mtp.sampling import Sampling  # noqa: E402
from sglang_mtp.strategy import Strategy  # noqa: E402


def _server_args(argv):
    from sglang.srt.server_args import ServerArgs

    register()
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    return ServerArgs.from_cli_args(parser.parse_args(["--model-path", "m", *argv]))


def test_entry_point_is_installed():
    eps = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    assert eps.get("mtp") == "sglang_mtp.sglang_plugin:register"


def test_register_applies_every_hook():
    from sglang.srt.plugins.hook_registry import HookRegistry
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    register()
    assert spec.SETUP_ERRORS == []
    for target in [commit.TARGET, commit.SESSION_TARGET, headroom.TARGET, metrics.TARGET, verify_mask.TARGET,
                   *cpu_shims.TARGETS.values(), *graphs.TARGETS.values()]:
        assert target in HookRegistry._patched, target
    algo = SpeculativeAlgorithm.from_string("mtp")
    assert isinstance(algo, spec.MTPSpecAlgo) and algo.supports_overlap


def test_decode_mode_mtp_translates_to_the_algorithm(monkeypatch):
    monkeypatch.delenv(flags.ENV_CONFIG, raising=False)
    sa = _server_args(["--decode-mode", "mtp", "--mtp-strategy", "static", "--mtp-k-max", "3"])
    assert sa.speculative_algorithm == "MTP"
    cfg = flags.MTPConfig.from_env()
    assert (cfg.strategy, cfg.k_max, cfg.width) == ("static", 3, 5)
    assert cfg.strategy_obj() == Strategy.static(3)


def test_token_budget_flag(monkeypatch):
    monkeypatch.delenv(flags.ENV_CONFIG, raising=False)
    _server_args(["--decode-mode", "mtp", "--mtp-k-max", "8", "--mtp-token-budget", "120"])
    cfg = flags.MTPConfig.from_env()
    assert cfg.token_budget == 120 and cfg.width_policy("cpu").target(9) == 7
    assert flags.MTPConfig(k_max=8, token_budget=0).width_policy("cuda").target(1000) == 15  # fixed width
    default = flags.MTPConfig(k_max=8)
    assert default.width_policy("cpu").budget == flags.DEFAULT_TOKEN_BUDGET["cpu"]
    assert default.width_policy("cuda:1").budget == flags.DEFAULT_TOKEN_BUDGET["cuda"]
    assert not flags.MTPConfig(k_max=8, token_budget="auto").width_policy("cpu").adaptive  # until calibrated
    for bad in ("-1", "fast", "1.5"):
        with pytest.raises(SystemExit):
            _server_args(["--decode-mode", "mtp", "--mtp-token-budget", bad])
    for bad in (-1, "fast", True, 2.0):
        with pytest.raises(flags.MTPStartupError, match="--mtp-token-budget"):
            flags.MTPConfig(token_budget=bad)


def test_k_max_1_runs_sglang_unchanged(monkeypatch):
    # Plain decoding for every request: no MTP algorithm, so SGLang's own decode path (and
    # its CUDA graphs) run; the settings still reach the per-request validation.
    monkeypatch.delenv(flags.ENV_CONFIG, raising=False)
    sa = _server_args(["--decode-mode", "mtp", "--mtp-k-max", "1"])
    assert sa.speculative_algorithm is None
    assert flags.MTPConfig.from_env().k_max == 1


def test_forward_passes_added_for_mtp_requests_only(monkeypatch):
    import sglang.srt.runtime_context as rc

    recv = SimpleNamespace(spec_verify_ct=[0, 7])
    for algorithm, want in (("MTP", {"mtp_forward_passes": 8}), ("EAGLE", {})):
        monkeypatch.setattr(rc, "get_spec", lambda a=algorithm: SimpleNamespace(speculative_algorithm=a))
        meta = {}
        metrics.add_forward_passes(None, None, meta, recv, 1)
        assert meta == want, algorithm
    assert metrics.forward_passes(0) == 1  # a request that ended at its prefill


def test_graphs_replay_only_forwards_of_their_own_mode():
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    def runner(algorithm, mode):
        return SimpleNamespace(model_runner=SimpleNamespace(spec_algorithm=SimpleNamespace(name=algorithm)),
                               capture_forward_mode=mode)

    verify_graphs, decode_graphs = runner("MTP", ForwardMode.TARGET_VERIFY), runner("MTP", ForwardMode.DECODE)
    other = runner("EAGLE", ForwardMode.TARGET_VERIFY)
    decode, verify = (SimpleNamespace(forward_mode=m) for m in (ForwardMode.DECODE, ForwardMode.TARGET_VERIFY))
    assert graphs.same_mode_only(True, verify_graphs, decode) is False  # plain steps never replay verify graphs
    assert graphs.same_mode_only(True, verify_graphs, verify) is True
    assert graphs.same_mode_only(True, decode_graphs, decode) is True  # ... but their own DECODE set
    assert graphs.same_mode_only(True, decode_graphs, verify) is False
    assert graphs.same_mode_only(True, other, decode) is True  # other algorithms untouched
    assert graphs.same_mode_only(False, verify_graphs, verify) is False


def test_capture_spec_info_only_for_verify_graphs():
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    mr = SimpleNamespace(spec_algorithm=SimpleNamespace(name="MTP"), device="cpu")
    verify = SimpleNamespace(model_runner=mr, capture_forward_mode=ForwardMode.TARGET_VERIFY,
                             speculative_num_draft_tokens=3)
    decode = SimpleNamespace(model_runner=mr, capture_forward_mode=ForwardMode.DECODE, speculative_num_draft_tokens=1)
    info = graphs.runner_spec_info(None, verify, 6)
    assert info.num_tokens_per_req == 3 and info.custom_mask is None
    assert graphs.runner_spec_info(None, decode, 6) is None  # a DECODE capture has no verify input


def test_default_decode_mode_leaves_sglang_unchanged(monkeypatch):
    monkeypatch.delenv(flags.ENV_CONFIG, raising=False)
    sa = _server_args([])
    assert sa.speculative_algorithm is None and flags.ENV_CONFIG not in __import__("os").environ


@pytest.mark.parametrize("argv, needle", [
    (["--mtp-threshold", "1.5"], "--mtp-threshold"),
    (["--mtp-k-max", "0"], "--mtp-k-max"),
    (["--mtp-mask-token-id", "-3"], "--mtp-mask-token-id"),
])
def test_bad_flag_values_are_rejected(argv, needle, monkeypatch):
    monkeypatch.delenv(flags.ENV_CONFIG, raising=False)
    with pytest.raises(ValueError, match=needle):
        _server_args(["--decode-mode", "mtp", *argv])


def test_bad_strategy_choice_is_an_argparse_error():
    with pytest.raises(SystemExit):
        _server_args(["--decode-mode", "mtp", "--mtp-strategy", "fast"])


def test_launch_server_help_lists_the_flags():
    out = subprocess.run([sys.executable, "-m", "sglang.launch_server", "--help"], capture_output=True,
                         text=True, timeout=300).stdout
    for flag in ("--decode-mode", "--mtp-strategy", "--mtp-threshold", "--mtp-k-max", "--mtp-mask-token-id"):
        assert flag in out, flag


DEFAULT = Strategy.conf_adapt(0.9, 4)


@pytest.mark.parametrize("value, expected", [
    (None, DEFAULT), (True, DEFAULT), (False, Strategy.ntp()),
    ({"threshold": 0.5}, Strategy.conf_adapt(0.5, 4)),
    ({"strategy": "static", "k_max": 2}, Strategy.static(2)),
    ({"strategy": "verify"}, Strategy.verify(4)),
    ({"k_max": 1}, Strategy.ntp()),
])
def test_request_mtp_settings(value, expected):
    assert params.parse_request_mtp(value, DEFAULT, 4) == expected


@pytest.mark.parametrize("value, needle", [
    ({"threshold": -0.1}, r'\["threshold"\]'), ({"k_max": 5}, r'\["k_max"\]'), ({"k_max": 2.0}, "k_max"),
    ({"strategy": "beam"}, "strategy"), ({"tau": 0.9}, "unknown field"), ("0.9", "must be a dict"),
    # the same checks whatever the strategy; booleans are never numbers
    ({"threshold": "abc"}, r'\["threshold"\].*abc'), ({"strategy": "verify", "threshold": 2}, "threshold"),
    ({"strategy": "static", "threshold": float("nan")}, "threshold"), ({"threshold": True}, "threshold"),
    ({"k_max": True}, "k_max"), ({"k": 0}, r'\["k"\]'), ({"strategy": ["conf_adapt"]}, "strategy"),
    ({"strategy": None}, "strategy"), ([{"k_max": 2}], "must be a dict"), (3, "must be a dict"),
    # contradictory aliases name both fields
    ({"k": 100, "k_max": 2}, r'"k" \(100\) and "k_max" \(2\)'),
])
def test_bad_request_mtp_settings(value, needle):
    with pytest.raises(ValueError, match=needle):
        params.parse_request_mtp(value, DEFAULT, 4)


def test_agreeing_k_aliases_are_accepted():
    assert params.parse_request_mtp({"k": 3, "k_max": 3}, DEFAULT, 4) == Strategy.conf_adapt(0.9, 3)


@pytest.mark.parametrize("top_k, ok", [(2**31 - 1, True), (1 << 30, True), (-1, True), (2**31, False), (10**12, False)])
def test_top_k_past_int32_is_refused(top_k, ok):
    sp = SimpleNamespace(custom_params=None, top_k=top_k)
    if ok:
        assert params.verify_hook("ok", sp) == "ok"
    else:
        with pytest.raises(ValueError, match="top_k must be at most 2147483647"):
            params.verify_hook(None, sp)


@pytest.mark.parametrize("custom", [[{"mtp": {"k_max": 100}}], "mtp", 5, 1.5, True])
def test_non_object_custom_params_rejected_on_an_mtp_server(custom, monkeypatch):
    monkeypatch.setenv(flags.ENV_CONFIG, flags.MTPConfig(k_max=4).to_env())
    with pytest.raises(ValueError, match="custom_params must be an object"):
        params.verify_hook(None, SimpleNamespace(custom_params=custom))
    monkeypatch.delenv(flags.ENV_CONFIG)  # a plain server keeps SGLang's behaviour
    assert params.verify_hook("ok", SimpleNamespace(custom_params=custom)) == "ok"


@pytest.mark.parametrize("custom", [[{"mtp": {"k_max": 100}}], "mtp", 5, {"mtp": {"k_max": 100}}])
def test_scheduler_never_raises_on_request_settings(custom):
    # The tokenizer validates; whatever still reaches the scheduler decodes plainly.
    req = SimpleNamespace(rid="r", grammar=None, sampling_params=_sp(custom_params=custom))
    assert params.request_strategy(req, DEFAULT) == (
        (DEFAULT, False, None, 0) if not isinstance(custom, dict) else (Strategy.ntp(), False, None, 0))


def _request(**fields):
    """A request as ``check_prompt`` sees it: the fields it reads, None unless given."""
    return SimpleNamespace(**{**{name: None for name in ("input_embeds", "image_data", "video_data", "audio_data",
                                                         "session_params", "positional_embed_overrides",
                                                         "return_logprob", "top_logprobs_num", "logprob_start_len")},
                              **fields})


@pytest.mark.parametrize("ids, extra, needle", [
    ([], {}, "prompt is empty"), ([5], {}, None), ([0, 9], {}, None), ([5, 10], {}, "token id 10, outside"),
    ([-1], {}, "token id -1, outside"), (None, {"input_embeds": [[0.1]]}, None), ([], {"image_data": ["x"]}, None),
])
def test_prompt_checks(ids, extra, needle):
    obj, manager = _request(**extra), SimpleNamespace(model_config=SimpleNamespace(vocab_size=10))
    if needle:
        with pytest.raises(ValueError, match=needle):
            params.check_prompt(None, manager, obj, ids)
    else:
        assert params.check_prompt("ok", manager, obj, ids) == "ok"


@pytest.mark.parametrize("session, needle", [
    ({"id": {"a": 1}}, "session_params.id must be a string"), ({"id": [1]}, "session_params.id must be a string"),
    ({"id": "s", "rid": [1]}, "session_params.rid must be a string"),
    ({"id": "s", "offset": "a"}, "session_params.offset must be an integer"),
    ({"id": "s", "offset": 1.5}, "offset must be an integer"),
    ({"id": "s", "offset": True}, "offset must be an integer"),
    ({"id": "s", "replace": "no"}, "replace must be true or false"), ({"nofield": 1}, "no field 'nofield'"),
    ({"id": "s", "rid": "r", "offset": 2, "replace": False, "drop_previous_output": True}, None),
    ({"id": None}, None), ({}, None), (None, None), ("not an object", None),  # SGLang refuses a non-object
])
def test_session_params_checks(session, needle):
    obj, manager = _request(session_params=session), SimpleNamespace(model_config=SimpleNamespace(vocab_size=10))
    if needle:
        with pytest.raises(ValueError, match=needle):
            params.check_prompt(None, manager, obj, [5])
    else:
        assert params.check_prompt("ok", manager, obj, [5]) == "ok"


@pytest.mark.parametrize("value", [{"a": 1}, [1], "x", -1, 1.5])
def test_positional_embed_overrides_from_json_are_refused(value):
    obj = _request(positional_embed_overrides=value)
    manager = SimpleNamespace(model_config=SimpleNamespace(vocab_size=10))
    with pytest.raises(ValueError, match="positional_embed_overrides must be a PositionalEmbeds object"):
        params.check_prompt(None, manager, obj, [5])


@pytest.mark.parametrize("fields, needle", [
    (dict(return_logprob=True, top_logprobs_num=11), "top_logprobs_num \\(logprobs\\) must be at most the vocabulary size 10"),
    (dict(return_logprob=True, top_logprobs_num=10**12), "must be at most the vocabulary size"),
    (dict(return_logprob=True, top_logprobs_num=10), None), (dict(return_logprob=False, top_logprobs_num=11), None),
    (dict(return_logprob=True, logprob_start_len=-5), "logprob_start_len must be -1"),
    (dict(return_logprob=True, logprob_start_len=-1), None), (dict(return_logprob=True, logprob_start_len=3), None),
])
def test_logprob_checks(fields, needle):
    obj, manager = _request(**fields), SimpleNamespace(model_config=SimpleNamespace(vocab_size=10))
    if needle:
        with pytest.raises(ValueError, match=needle):
            params.check_prompt(None, manager, obj, [5])
    else:
        assert params.check_prompt("ok", manager, obj, [5]) == "ok"


def test_mask_id_outside_the_vocabulary_is_a_startup_error():
    flags.check_mask_in_vocab(0, 10)
    flags.check_mask_in_vocab(9, 10)
    for bad in (10, 99999):
        with pytest.raises(flags.MTPStartupError, match=f"--mtp-mask-token-id {bad} is outside.*vocab_size 10"):
            flags.check_mask_in_vocab(bad, 10)


def test_cuda_device_needs_the_cuda_kernels(monkeypatch):
    from sglang_mtp import ops

    monkeypatch.setattr(ops, "has_cuda_kernels", lambda: False)
    flags.check_cuda_kernels("cpu")
    with pytest.raises(flags.MTPStartupError, match="built without its CUDA kernels.*SGLANG_MTP_CUDA=1"):
        flags.check_cuda_kernels("cuda")
    monkeypatch.setattr(ops, "has_cuda_kernels", lambda: True)
    flags.check_cuda_kernels("cuda:0")


@pytest.mark.parametrize("debug", ["0", "1"])
def test_startup_errors_print_one_line(debug):
    # launch_server lets a start-up error propagate to the top: one line unless SGLANG_MTP_DEBUG=1.
    code = ("from sglang_mtp.sglang_plugin import flags; flags.install_excepthook(); "
            "flags.MTPConfig(k_max=0)")
    env = {**__import__("os").environ, flags.DEBUG_ENV: debug}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    if debug == "0":
        assert lines == ["error: sglang-mtp: --mtp-k-max must be an integer in [1, 64], got 0 "
                         "(traceback: SGLANG_MTP_DEBUG=1)"]
    else:
        assert lines[0].startswith("Traceback") and "MTPStartupError" in lines[-1]


def _sp(**kw):
    base = dict(top_k=1, temperature=1.0, top_p=1.0, min_p=0.0, sampling_seed=None, json_schema=None, regex=None, ebnf=None, structural_tag=None, frequency_penalty=0.0,
                presence_penalty=0.0, repetition_penalty=1.0, min_new_tokens=0, logit_bias=None,
                custom_params=None)
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("kw, fallback", [
    ({}, False), ({"top_k": 50}, False), ({"regex": "a+"}, True), ({"repetition_penalty": 1.1}, True),
    ({"min_new_tokens": 3}, True), ({"logit_bias": {"5": 1.0}}, True),
])
def test_sampler_fallback_rule(kw, fallback):
    assert params.needs_sampler(_sp(**kw)) is fallback


@pytest.mark.parametrize("kw, custom, plan", [
    ({}, None, (DEFAULT, False, None, 0)),  # greedy
    ({"top_k": 1 << 30, "temperature": 0.7, "sampling_seed": 5}, None, (DEFAULT, False, Sampling(0.7), 5)),
    ({"top_k": 20, "top_p": 0.9, "min_p": 0.1, "sampling_seed": -3}, {"mtp": {"strategy": "verify"}},
     (Strategy.verify(DEFAULT.k), False, Sampling(1.0, 20, 0.9, 0.1), -3)),
    ({"top_k": -1}, {"mtp": False}, (Strategy.ntp(), True, None, 0)),  # plain sampling: SGLang's sampler
    ({"top_k": -1, "regex": "a+"}, None, (Strategy.ntp(), True, None, 0)),
])
def test_sampled_requests_decode_with_mtp(kw, custom, plan):
    req = SimpleNamespace(rid="r", grammar=None, sampling_params=_sp(custom_params=custom, **kw))
    assert params.request_strategy(req, DEFAULT) == plan


def test_sampled_requests_without_a_seed_get_a_fresh_one():
    req = SimpleNamespace(rid="r", grammar=None, sampling_params=_sp(top_k=-1))
    seeds = {params.request_strategy(req, DEFAULT).seed for _ in range(4)}
    assert len(seeds) == 4


def _req(committed, finished=False):
    return SimpleNamespace(kv=SimpleNamespace(kv_committed_len=committed), is_retracted=False,
                           finished=lambda: finished)


@pytest.mark.parametrize("algorithm, page, extra, wide", [
    ("MTP", 1, 19, 30),  # k_max 8: rows 4 + W = 19 past the context, the step reserves 2W = 30
    ("MTP", 16, 19, 45),  # paged KV: a page's rounding on top
    ("MTP", 1, 40, 40),  # already wide enough
    ("EAGLE", 1, 19, 19),  # other algorithms keep SGLang's sizing
    (None, 1, 5, 5),
])
def test_request_rows_hold_a_decode_steps_reserve_for_mtp(monkeypatch, algorithm, page, extra, wide):
    from sglang.srt.mem_cache import allocation_sizing as sizing

    monkeypatch.setattr(sizing, "get_spec", lambda: SimpleNamespace(speculative_algorithm=algorithm))
    monkeypatch.setattr(sizing, "get_alloc_reserve_per_decode", lambda: 30)
    monkeypatch.setattr(sizing, "get_alloc_page_size", lambda: page)
    assert headroom.widen_rows(extra) == wide


@pytest.mark.parametrize("algorithm, kept", [("MTP", False), ("EAGLE", True)])
def test_triton_graph_state_has_no_verify_mask_on_mtp_servers(monkeypatch, caplog, algorithm, kept):
    # SGLang's Triton backend, as far as its CUDA-graph set-up goes (a partial instance on
    # the CPU): on MTP servers it gets no verify mask, which MTP's causal verify never reads;
    # EAGLE keeps its max_bs * W * (context + W) buffer.
    from sglang.srt.layers.attention import triton_backend
    from sglang.srt.mem_cache import allocation_sizing as sizing

    register()
    monkeypatch.setattr(sizing, "get_spec", lambda: SimpleNamespace(speculative_algorithm=algorithm))
    backend = object.__new__(triton_backend.TritonAttnBackend)
    for name, value in dict(dllm_attention=None, num_head=2, max_kv_splits=2, v_head_dim=4, swa_v_head_dim=None,
                            lean_total_programs=1, lean_block_m=1, device="cpu", max_context_len=64,
                            is_draft_runner=False, skip_prefill=False, num_draft_tokens=5, sliding_window_size=None,
                            use_sliding_window_kv_pool=False).items():
        setattr(backend, name, value)
    with caplog.at_level("INFO", logger=verify_mask.__name__):
        backend.init_cuda_graph_state(4, 20)
    if kept:
        assert backend.verify_mask.buffer.numel() == 4 * 5 * (64 + 5) and not caplog.records
    else:  # the log line bench/gpu_check.sh looks for on a Triton Engine
        assert backend.verify_mask is None and "MTP: no Triton verify mask" in caplog.text


def test_commit_hook_makes_committed_length_count_real_kv_only():
    # Stride W+1 = 4: three emitted-token columns, then `keep`. SGLang already added the
    # emitted counts (3, 1, 2); the hook replaces them with keep (0, 1, 2).
    reqs = [_req(13), _req(21), _req(30, finished=True)]
    ids = torch.tensor([[5, 6, 7, 0], [9, 0, 0, 1], [4, 4, 0, 2]]).reshape(-1)
    result = SimpleNamespace(speculative_num_draft_tokens=3, speculative_output_stride=4, next_token_ids=ids)
    batch = SimpleNamespace(spec_algorithm=SimpleNamespace(name="MTP"), reqs=reqs)
    commit.correct_committed_lengths([[5, 6, 7], [9], [4, 4]], None, result, batch)
    assert [r.kv.kv_committed_len for r in reqs] == [10, 21, 30]


def test_assign_shim_matches_the_kernel_contract():
    req_to_token = torch.zeros(3, 10, dtype=torch.int32)
    cpu_shims._assign_req_to_token_pool_torch(
        torch.tensor([2, 0]), req_to_token, torch.tensor([1, 4]), torch.tensor([3, 7]),
        torch.tensor([11, 12, 13, 14, 15]), 2)
    assert req_to_token[2, 1:3].tolist() == [11, 12] and req_to_token[0, 4:7].tolist() == [13, 14, 15]
    assert int(req_to_token.count_nonzero()) == 5


def test_engine_helper_validates_before_starting():
    with pytest.raises(ValueError, match="--mtp-k-max"):
        flags.engine("unused", k_max=0)
    assert json.loads(flags.MTPConfig(k_max=2).to_env())["k_max"] == 2


def test_failed_setup_fails_loudly_at_startup(monkeypatch):
    # SGLang only logs plugin exceptions; the algorithm refuses to start instead.
    monkeypatch.setattr(spec, "SETUP_ERRORS", ["hook target(s) missing in this SGLang: ['x.y']"])
    algo = spec.MTPSpecAlgo("MTP", lambda sa: None)
    with pytest.raises(RuntimeError, match="could not be applied.*x.y"):
        algo.handle_server_args(SimpleNamespace(speculative_num_draft_tokens=None))


@pytest.mark.parametrize("device, disabled, env, off", [
    ("cpu", False, None, True), ("cpu", False, "0", True), ("cpu", False, "1", False),
    ("cpu", True, None, False), ("cuda", False, None, False), ("cuda:1", False, None, False)])
def test_overlap_scheduling_is_off_on_a_cpu_unless_kept(monkeypatch, device, disabled, env, off):
    if env is None:
        monkeypatch.delenv(flags.CPU_OVERLAP_ENV, raising=False)
    else:
        monkeypatch.setenv(flags.CPU_OVERLAP_ENV, env)
    assert flags.cpu_overlap_off(device, disabled) is off


def test_the_algorithm_turns_overlap_off_on_a_cpu(monkeypatch):
    monkeypatch.delenv(flags.ENV_CONFIG, raising=False)
    monkeypatch.delenv(flags.CPU_OVERLAP_ENV, raising=False)
    algo = spec.MTPSpecAlgo("MTP", lambda sa: None)
    args = SimpleNamespace(speculative_num_draft_tokens=None, device="cpu", disable_overlap_schedule=False,
                           model_path=None, tokenizer_path=None)
    algo.handle_server_args(args)
    assert args.disable_overlap_schedule and args.speculative_num_draft_tokens == 15  # default k_max 8
    monkeypatch.setenv(flags.CPU_OVERLAP_ENV, "1")
    kept = SimpleNamespace(**{**vars(args), "disable_overlap_schedule": False, "speculative_num_draft_tokens": None})
    algo.handle_server_args(kept)
    assert not kept.disable_overlap_schedule


@pytest.mark.parametrize("extra, needle", [
    ({"enable_return_hidden_states": True}, "--enable-return-hidden-states"),
    ({"return_hidden_states_mode": "last"}, "--return-hidden-states-mode last"),
    ({"return_hidden_states_mode": "full"}, "--return-hidden-states-mode full"),
    ({"return_hidden_states_mode": None}, None), ({"return_hidden_states_mode": "none"}, None),
])
def test_hidden_state_returns_are_refused_at_start_up(monkeypatch, extra, needle):
    _start_up(monkeypatch, {"enable_return_hidden_states": False, "return_hidden_states_mode": None, **extra}, needle)


def _start_up(monkeypatch, extra, needle):
    """The launcher's server-argument hook on ``extra``: refused with ``needle`` in the message,
    or (needle None) accepted."""
    monkeypatch.delenv(flags.ENV_CONFIG, raising=False)
    args = SimpleNamespace(**{"speculative_num_draft_tokens": None, "device": "cpu", "disable_overlap_schedule": False,
                              "model_path": None, "tokenizer_path": None, **extra})
    algo = spec.MTPSpecAlgo("MTP", lambda sa: None)
    if needle is None:
        algo.handle_server_args(args)
    else:
        with pytest.raises(flags.MTPStartupError, match=needle):
            algo.handle_server_args(args)


@pytest.mark.parametrize("extra, needle", [
    ({"enable_dp_attention": True}, "data-parallel attention"),
    ({"attn_dp_size": 2}, "data-parallel attention"),
    ({"pp_size": 2}, "pipeline parallelism"),
    ({"enable_layernorm_sp": True}, "--enable-layernorm-sp"),
    ({"disaggregation_mode": "decode"}, "--disaggregation-mode decode"),
    ({"disaggregation_mode": "null", "attn_dp_size": 1, "pp_size": 1, "tp_size": 2}, None),  # plain TP is served
])
def test_set_ups_an_mtp_step_would_hang_in_are_refused_at_start_up(monkeypatch, extra, needle):
    _start_up(monkeypatch, extra, needle)


@pytest.mark.parametrize("case, expected", [
    ("cuda", "flashinfer"), ("device unset, a GPU seen", "flashinfer"), ("cpu", None),
    ("backend given", None), ("decode backend given", None), ("no flashinfer", None), ("MLA model", None),
])
def test_a_cuda_mtp_server_without_a_backend_gets_one_that_narrows(tmp_path, monkeypatch, case, expected):
    # SGLang's default for such models on Hopper is FA3, which sizes verify batches from the
    # server's width: every step would run 2*k_max-1 wide at any load.
    import importlib.util

    import torch
    from transformers import LlamaConfig

    LlamaConfig(**({"kv_lora_rank": 512} if case == "MLA model" else {})).save_pretrained(tmp_path)
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (None if case == "no flashinfer" else object()) if name == "flashinfer"
                        else real_find(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = SimpleNamespace(model_path=str(tmp_path), device={"cpu": "cpu", "device unset, a GPU seen": None}.get(
        case, "cuda"), attention_backend="fa3" if case == "backend given" else None,
        decode_attention_backend="triton" if case == "decode backend given" else None, prefill_attention_backend=None)
    assert flags.narrow_attention_backend(args) == expected


def test_launch_server_flags_on_cuda_ask_for_flashinfer_unless_a_backend_is_given(tmp_path, monkeypatch):
    import importlib.util

    import torch
    from transformers import LlamaConfig

    monkeypatch.delenv(flags.ENV_CONFIG, raising=False)
    LlamaConfig().save_pretrained(tmp_path)
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flashinfer" else real_find(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    common = ["--model-path", str(tmp_path), "--device", "cuda"]
    assert _server_args([*common, "--decode-mode", "mtp"]).attention_backend == "flashinfer"
    assert _server_args([*common, "--decode-mode", "mtp", "--attention-backend", "fa3"]).attention_backend == "fa3"
    assert _server_args(common).attention_backend is None  # a plain server keeps SGLang's own default
    assert _server_args([*common, "--decode-mode", "mtp", "--mtp-k-max", "1"]).attention_backend is None  # plain too


@pytest.mark.parametrize("trust", [False, True])
def test_checkpoint_code_runs_only_with_trust_remote_code(tmp_path, monkeypatch, trust):
    # Looking up <MTP> in the tokenizer, and the model type for the attention backend, follow
    # --trust-remote-code as SGLang does: a checkpoint's own code never runs without it.
    import importlib.util

    import torch
    import transformers

    seen = []

    def record(name):
        def from_pretrained(path, **kwargs):
            seen.append((name, kwargs.get("trust_remote_code")))
            raise OSError("recorded")
        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", record("config"))
    with pytest.raises(flags.MTPStartupError, match="no <MTP> mask token"):
        flags.resolve_mask_token_id(SimpleNamespace(), str(tmp_path), None, trust)
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flashinfer" else real_find(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = SimpleNamespace(model_path=str(tmp_path), device="cuda", trust_remote_code=trust,
                           **{n: None for n in flags.BACKEND_FIELDS})
    assert flags.narrow_attention_backend(args) is None  # an unreadable config keeps SGLang's default
    assert seen == [("tokenizer", trust), ("config", trust)]


def test_models_with_recurrent_layers_are_refused():
    # The masks would advance a Mamba / linear-attention layer's state, which the next step's
    # real tokens do not overwrite (KV slots they do).
    from sglang.srt.configs import Mamba2Config
    from transformers import LlamaConfig

    def model_config(hf):
        return SimpleNamespace(hf_config=hf, is_draft_model=False, linear_attn_registry_result=None)

    with pytest.raises(flags.MTPStartupError, match="recurrent layers \\(Mamba2Config\\)"):
        flags.check_attention_only(model_config(Mamba2Config()))
    flags.check_attention_only(model_config(LlamaConfig()))  # attention only: served


def test_prefill_block_tokens_are_emitted_first():
    # Masks ride the prefill: t2..t_a of a request's first block are emitted by its first
    # decode step, before that step's own tokens (worker._prepend), row by row.
    from sglang_mtp.sglang_plugin.worker import _prepend

    W = 5
    emitted = torch.tensor([[7, 0, 0, 0, 0, 1], [8, 9, 0, 0, 0, 2], [5, 6, 0, 0, 0, 3]])
    emit_len = torch.tensor([1, 2, 2], dtype=torch.int32)
    pending = torch.tensor([[40, 41, 42, 3, 3], [50, 3, 3, 3, 3], [60, 61, 3, 3, 3]])
    count = torch.tensor([2, 0, 1], dtype=torch.int32)
    out, n, last = _prepend(emitted, emit_len, pending, count, W)
    assert out.tolist() == [[41, 42, 7, 0, 0, 1], [8, 9, 0, 0, 0, 2], [61, 5, 6, 0, 0, 3]]
    assert n.tolist() == [3, 2, 3] and n.dtype == torch.int32 and last.tolist() == [7, 9, 6]


class _Event:
    def __init__(self):
        self.recorded = 0

    def record(self):
        self.recorded += 1


class _Auxiliary:
    def copy_to_host(self, copy):
        return ("on host", copy(torch.ones(2)).tolist())


def _batch_result(ids, **fields):
    from sglang.srt.layers.logits_processor import LogitsProcessorOutput
    from sglang.srt.managers.utils import GenerationBatchResult

    out = LogitsProcessorOutput(next_token_logits=torch.zeros(1, 4), auxiliary_device_output=_Auxiliary())
    result = GenerationBatchResult(logits_output=out, next_token_ids=ids, **fields)
    result.copy_done = _Event()
    return result


def test_result_copy_of_host_tensors_keeps_its_effects_without_the_copy():
    ids, accept = torch.tensor([5, 7]), torch.ones(2, dtype=torch.int32)
    result = _batch_result(ids, accept_lens=accept)
    original = []
    cpu_shims._result_already_on_host(lambda *a: original.append(a), result, False, False)
    assert original == []  # SGLang's copy (and its profiler range) did not run
    assert result.next_token_ids is ids and result.accept_lens is accept  # nothing to copy on the host
    assert result.auxiliary_host_output == ("on host", [1.0, 1.0])  # its auxiliary outputs still move
    assert result.logits_output.auxiliary_device_output is None
    assert result.copy_done.recorded == 1


@pytest.mark.parametrize("case", ["device ids", "device accept lengths", "no ids", "logprobs", "device hidden states"])
def test_result_copy_takes_sglangs_path_unless_every_tensor_is_on_the_host(case):
    meta = torch.empty(2, device="meta")
    ids = {"device ids": meta, "no ids": None}.get(case, torch.tensor([5, 7]))
    result = _batch_result(ids, accept_lens=meta if case == "device accept lengths" else None)
    if case == "device hidden states":
        result.logits_output.hidden_states = meta
    original = []
    cpu_shims._result_already_on_host(lambda *a: original.append(a), result, case == "logprobs", True)
    assert original == [(result, case == "logprobs", True)]
    assert result.copy_done.recorded == 0 and result.auxiliary_host_output is None
