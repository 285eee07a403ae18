"""No request can take an MTP server down: the known reproductions, sessions, a fuzz run,
aborted requests, bad start-up flags.

Every test talks HTTP to the session's ONE live server (``conftest.server``); the fuzz test
ends with SGLang's idle KV-pool check and a greedy request checked against the reference.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from tests.models import random_prompts
from tests.sglang.harness import build_checkpoint, reference
from tests.sglang.live_server import REPO, health, post, probe_idle

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


def _generate(base, sampling_params, **request):
    request.setdefault("input_ids", [5, 6, 7])
    return post(base + "/generate", {**request, "sampling_params": sampling_params})


@pytest.mark.parametrize("custom", [[{"mtp": {"k_max": 100}}], "mtp", 5])
def test_non_object_custom_params_is_a_400(server, custom):
    status, body = _generate(server.base, {"max_new_tokens": 4, "custom_params": custom})
    assert status == 400 and "custom_params must be an object" in json.dumps(body), (status, body)
    assert health(server.base) == 200


@pytest.mark.parametrize("mtp, needle", [
    ({"threshold": "abc"}, 'threshold'), ({"strategy": "verify", "threshold": 2}, "threshold"),
    ({"threshold": True}, "threshold"), ({"k": 100, "k_max": 2}, '\\"k\\" (100) and \\"k_max\\" (2)'),
])
def test_bad_mtp_fields_are_a_400_naming_the_field(server, mtp, needle):
    status, body = _generate(server.base, {"max_new_tokens": 4, "custom_params": {"mtp": mtp}})
    assert status == 400 and needle in json.dumps(body), (status, body)


@pytest.mark.parametrize("request_", [{"text": ""}, {"input_ids": []}])
def test_empty_prompt_is_a_400(server, request_):
    status, body = post(server.base + "/generate", {**request_, "sampling_params": {"max_new_tokens": 4}})
    assert status == 400 and "empty" in json.dumps(body), (status, body)  # text: ours; ids: SGLang's
    assert health(server.base) == 200


@pytest.mark.parametrize("ids", [[5, 100000], [-3]])
def test_out_of_vocabulary_prompt_ids_are_a_400(server, ids):
    status, body = post(server.base + "/generate", {"input_ids": ids, "sampling_params": {"max_new_tokens": 4}})
    assert status == 400 and "outside the model's vocabulary" in json.dumps(body), (status, body)
    assert health(server.base) == 200


def test_out_of_vocabulary_mask_id_is_a_one_line_startup_error(tmp_path):
    build_checkpoint(tmp_path / "ckpt")
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(tmp_path / "ckpt"),
           "--device", "cpu", "--decode-mode", "mtp", "--mtp-mask-token-id", "99999"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if "sglang-mtp" in line]
    assert len(errors) == 1 and "--mtp-mask-token-id 99999 is outside the model's vocabulary" in errors[0]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]


# -- sessions -------------------------------------------------------------------------
# SGLang's (non-streaming) sessions: a request continues an earlier one's context. Ill-typed
# session fields took stock SGLang 0.5.23's scheduler down (ids are dict keys, the offset a
# slice bound); the plugin refuses them with a 400 naming the field.
@pytest.mark.parametrize("session, needle", [
    ({"id": {"a": 1}}, "session_params.id"), ({"id": [1]}, "session_params.id"),
    ({"rid": {"x": 1}}, "session_params.rid"), ({"rid": [1]}, "session_params.rid"),
    ({"offset": "a"}, "session_params.offset"), ({"offset": 1.5}, "session_params.offset"),
    ({"nofield": 1}, "nofield"),
])
def test_ill_typed_session_params_are_a_400(server, session, needle):
    status, body = _generate(server.base, {"max_new_tokens": 4}, session_params=session)
    assert status == 400 and needle in json.dumps(body), (status, body)
    assert health(server.base) == 200


@pytest.mark.parametrize("path, request_, needle", [
    ("/generate", {"return_logprob": True, "top_logprobs_num": 10**12}, "top_logprobs_num"),
    ("/generate", {"return_logprob": True, "logprob_start_len": -5}, "logprob_start_len"),
    ("/v1/completions", {"model": "default", "prompt": "ab", "logprobs": 10**6}, "top_logprobs_num"),  # the same field
])
def test_logprob_requests_the_sampler_cannot_serve_are_a_400(server, path, request_, needle):
    # Each took stock SGLang 0.5.23's scheduler down (top-k past the vocabulary in the sampler).
    body = {**request_, "max_tokens": 2} if path != "/generate" else {
        "input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4}, **request_}
    status, reply = post(server.base + path, body)
    assert status == 400 and needle in json.dumps(reply), (status, reply)
    assert health(server.base) == 200


def test_top_k_past_int32_is_a_400(server):
    # SGLang 0.5.23 accepted it and its scheduler died building the batch's int32 top-k tensor.
    status, body = _generate(server.base, {"max_new_tokens": 4, "top_k": 10**12})
    assert status == 400 and "top_k must be at most 2147483647" in json.dumps(body), (status, body)
    assert _generate(server.base, {"max_new_tokens": 4, "top_k": 2**31 - 1})[0] == 200
    assert health(server.base) == 200


@pytest.mark.parametrize("value", [{"a": 1}, [1], "x", 1.5])
def test_positional_embed_overrides_in_json_are_a_400(server, value):
    # The scheduler calls a method of this field's object: any JSON value took stock SGLang
    # 0.5.23's scheduler down (found by sending odd values in every request field).
    status, body = _generate(server.base, {"max_new_tokens": 4}, positional_embed_overrides=value)
    assert status == 400 and "positional_embed_overrides" in json.dumps(body), (status, body)
    assert health(server.base) == 200


def test_a_session_continues_like_the_reference_decoder(server):
    base, model = server.base, server.model
    status, sid = post(base + "/open_session", {"capacity_of_str_len": 1000})
    assert status == 200
    try:
        p1, p2 = random_prompts(2, seed=3)
        sampling = {"temperature": 0, "max_new_tokens": 10, "custom_params": {"mtp": {"strategy": "verify"}}}
        status, first = _generate(base, sampling, input_ids=p1, session_params={"id": sid})
        assert status == 200
        status, second = _generate(base, sampling, input_ids=p2,
                                   session_params={"id": sid, "rid": first["meta_info"]["id"]})
        assert status == 200
        context = p1 + first["output_ids"] + p2  # the session's context for the second turn
        assert first["output_ids"] == reference(model, [p1], ["verify:3"], 10)[0]
        assert second["output_ids"] == reference(model, [context], ["verify:3"], 10)[0]
    finally:
        assert post(base + "/close_session", {"session_id": sid})[0] == 200


# -- fuzz --------------------------------------------------------------------------------
# Any JSON value, with numbers at the edges (NaN/inf, huge, negative) and the type confusions
# a client makes; placed where the plugin and SGLang read request fields.
_numbers = st.one_of(st.integers(-2**63, 2**63), st.sampled_from([0, 1, -1, 2**31, 0.5, 1e30, -0.0]),
                     st.floats(allow_nan=True, allow_infinity=True))
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
_mtp = st.one_of(_json, st.dictionaries(
    st.sampled_from(["strategy", "threshold", "k_max", "k", "tau"]),
    st.one_of(_json, st.sampled_from(["conf_adapt", "static", "verify", "ntp"]), st.integers(0, 5),
              st.floats(-0.5, 1.5)), max_size=4))
_custom = st.one_of(_json, st.fixed_dictionaries({"mtp": _mtp}), st.dictionaries(st.text(max_size=6), _json, max_size=2))
_sampling = st.dictionaries(
    st.sampled_from(["temperature", "top_p", "top_k", "min_p", "max_new_tokens", "stop", "stop_token_ids",
                     "ignore_eos", "n", "frequency_penalty", "repetition_penalty", "min_new_tokens",
                     "logit_bias", "skip_special_tokens", "no_such_field"]),
    st.one_of(_json, st.integers(0, 8), st.floats(0, 2)), max_size=4)
_prompt = st.one_of(st.fixed_dictionaries({"input_ids": st.lists(st.integers(3, 40), min_size=1, max_size=12)}),
                    st.fixed_dictionaries({"text": st.text(max_size=12)}),
                    st.fixed_dictionaries({"input_ids": _json}))
_request = st.tuples(_prompt, _sampling, _custom)
FUZZ_BATCHES, FUZZ_BATCH = 40, 8  # 320 requests, 8 in flight at a time


def _send(base, req):
    prompt, sampling, custom = req
    sampling = {"max_new_tokens": 6, **sampling, "custom_params": custom}
    if isinstance(sampling.get("max_new_tokens"), int) and sampling["max_new_tokens"] > 64:
        sampling["max_new_tokens"] = 64  # keep the run short; huge values are fuzzed below
    try:
        status, _ = post(base + "/generate", {**prompt, "sampling_params": sampling}, timeout=120)
    except (ConnectionError, OSError) as e:  # urllib wraps a dropped connection as URLError(OSError)
        return f"dropped: {e}"
    return status


def test_fuzzed_requests_never_take_the_server_down(server):
    seen = {}

    @hypothesis.settings(max_examples=FUZZ_BATCHES, derandomize=True, database=None, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.lists(_request, min_size=FUZZ_BATCH, max_size=FUZZ_BATCH))
    def batch(reqs):
        with ThreadPoolExecutor(FUZZ_BATCH) as pool:
            statuses = list(pool.map(lambda r: _send(server.base, r), reqs))
        for status, req in zip(statuses, reqs):
            seen[status] = seen.get(status, 0) + 1
            assert status == 200 or (isinstance(status, int) and 400 <= status < 500), (status, req)
        assert health(server.base) == 200

    batch()
    # Huge budgets are accepted or refused, never fatal.
    for big in (2**31, 10**12):
        status, _ = _generate(server.base, {"max_new_tokens": big, "ignore_eos": True})
        assert status == 200 or 400 <= status < 500
    print(f"fuzz: {sum(seen.values())} requests, statuses {seen}")
    assert sum(seen.values()) == FUZZ_BATCHES * FUZZ_BATCH and seen.get(200, 0) > 0 and len(seen) > 1

    # Idle: no KV slot or request slot leaked (SGLang's own accounting, radix cache flushed).
    assert post(server.base + "/flush_cache", {})[0] == 200
    idle = probe_idle(server.probe)
    assert "error" not in idle and not idle["leak"] and idle["available"] == idle["total"], idle
    # And the server still decodes exactly like the reference decoder.
    prompts = random_prompts(2, seed=5)
    status, body = post(server.base + "/generate", {
        "input_ids": prompts, "sampling_params": {"temperature": 0, "max_new_tokens": 12}})
    assert status == 200
    assert [b["output_ids"] for b in body] == reference(server.model, prompts, ["conf_adapt:0.5:3"] * 2, 12)


# -- aborts ------------------------------------------------------------------------------
# Clients go away mid-stream and operators abort requests: each aborted request must give back
# its KV slots and leave no MTP state behind in its request-pool row for the next request.
ABORT_MODES = [{"mtp": {"strategy": "verify"}}, {"mtp": {"strategy": "conf_adapt", "threshold": 0.3}},
               {"mtp": {"strategy": "static", "k": 2}}, {"mtp": False}, {}]


def _open_stream(base, i, rid=None):
    """A streamed request of 200 tokens (mode i % 5; sampled when i % 3 == 2) and its first event."""
    url = urlsplit(base)
    sampling = {"max_new_tokens": 200, "ignore_eos": True, "custom_params": ABORT_MODES[i % len(ABORT_MODES)]}
    if i % 3 == 2:
        sampling.update(temperature=0.8, sampling_seed=i)
    body = {"input_ids": [3 + (i * 7 + j) % 37 for j in range(2 + i % 20)], "sampling_params": sampling,
            "stream": True, **({"rid": rid} if rid else {})}
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    conn.request("POST", "/generate", json.dumps(body), {"Content-Type": "application/json"})
    stream = conn.getresponse()
    assert stream.status == 200
    return conn, stream, _next_event(stream)


def _next_event(stream):
    while True:
        line = stream.readline()
        if not line:
            return None
        if line.startswith(b"data:") and line.strip() != b"data: [DONE]":
            return json.loads(line[5:])


def _last_event(stream):
    last = None
    while (event := _next_event(stream)) is not None:
        last = event
    return last


def test_aborted_requests_leave_no_slots_or_state_behind(server):
    base = server.base
    # 1. Clients that drop the connection after their first event, 16 at a time.
    def drop(i):
        conn, _, first = _open_stream(base, i)
        conn.close()
        return first is not None

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(drop, range(48)))
    # 2. /abort_request by rid while each request is decoding: its stream ends "abort".
    def abort_one(i):
        conn, stream, first = _open_stream(base, i, rid=f"abort-test-{i}")
        assert first is not None and post(base + "/abort_request", {"rid": f"abort-test-{i}"})[0] == 200
        last = _last_event(stream) or first
        conn.close()
        return last["meta_info"]["finish_reason"]["type"], len(last["output_ids"])

    with ThreadPoolExecutor(8) as pool:
        ends = list(pool.map(abort_one, range(16)))
    assert all(kind == "abort" and n < 200 for kind, n in ends), ends
    # 3. abort_all with eight requests decoding.
    opened = [_open_stream(base, i) for i in range(8)]
    assert post(base + "/abort_request", {"abort_all": True})[0] == 200
    for conn, stream, first in opened:
        assert (_last_event(stream) or first)["meta_info"]["finish_reason"]["type"] == "abort"
        conn.close()
    assert health(base) == 200

    # Every slot is back (SGLang's idle check, radix cache flushed) ...
    assert post(base + "/flush_cache", {})[0] == 200
    idle = probe_idle(server.probe)
    assert "error" not in idle and not idle["leak"] and idle["available"] == idle["total"], idle
    # ... and requests reusing the aborted requests' pool rows decode like the reference decoder.
    prompts = random_prompts(6, seed=11)
    specs = ["conf_adapt:0.5:3", "verify:3", "static:2"] * 2
    params = [{}, {"mtp": {"strategy": "verify"}}, {"mtp": {"strategy": "static", "k": 2}}] * 2
    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda pc: post(base + "/generate", {"input_ids": pc[0], "sampling_params": {
            "temperature": 0, "max_new_tokens": 20, "custom_params": pc[1]}}), zip(prompts, params)))
    assert all(status == 200 for status, _ in outs)
    assert [body["output_ids"] for _, body in outs] == reference(server.model, prompts, specs, 20)
