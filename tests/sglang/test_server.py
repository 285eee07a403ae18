"""``python -m sglang.launch_server --decode-mode mtp`` on CPU: native ``/generate`` and the
OpenAI-compatible ``/v1/completions``, each with per-request ``custom_params``, whole and
streamed."""

from __future__ import annotations

import json
import urllib.request

from tests.models import random_prompts, tiny_tokenizer
from tests.sglang.harness import mtp_params, reference
from tests.sglang.live_server import post as _post

NEW = 16


def test_native_generate_with_custom_params(server):
    base, model = server.base, server.model
    prompts = random_prompts(2, seed=11)
    specs = ["conf_adapt:0.5:3", "static:2"]
    status, body = _post(base + "/generate", {
        "input_ids": prompts,
        "sampling_params": [{"temperature": 0, "max_new_tokens": NEW},
                            {"temperature": 0, "max_new_tokens": NEW, "custom_params": mtp_params("static:2")}],
    })
    assert status == 200, body
    assert [b["output_ids"] for b in body] == reference(model, prompts, specs, NEW)


def test_a_cpu_server_runs_without_overlap_scheduling(server):
    # the plugin's CPU default (flags.cpu_overlap_off); the test above ran under it
    with urllib.request.urlopen(server.base + "/get_server_info", timeout=30) as r:
        info = json.loads(r.read())
    assert info["disable_overlap_schedule"] is True and info["device"] == "cpu"


def test_openai_completion_with_custom_params(server):
    base, model = server.base, server.model
    tok = tiny_tokenizer()
    prompt = "abc de"
    status, body = _post(base + "/v1/completions", {
        "model": "default", "prompt": prompt, "max_tokens": NEW, "temperature": 0,
        "custom_params": mtp_params("verify:3"),
    })
    assert status == 200, body
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ref = reference(model, [ids], ["verify:3"], NEW)[0]
    assert body["choices"][0]["text"] == tok.decode(ref, skip_special_tokens=True)


def test_bad_custom_params_is_a_client_error(server):
    base = server.base
    status, body = _post(base + "/generate", {
        "input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4, "custom_params": {"mtp": {"k_max": 9}}}})
    assert status == 400 and "k_max" in json.dumps(body), (status, body)
    status, _ = _post(base + "/generate", {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4}})
    assert status == 200


def test_sgl_function_with_per_gen_mtp_settings(server):
    import sglang as sgl

    from sglang_mtp.sglang_plugin.client import MTPRuntimeEndpoint, mtp_gen

    base, model = server.base, server.model
    tok = tiny_tokenizer()
    backend = MTPRuntimeEndpoint(base, mtp={"strategy": "static", "k_max": 2})

    @sgl.function
    def program(s):
        s += "hello"
        s += mtp_gen("a", max_tokens=8, temperature=0, mtp={"strategy": "static", "k_max": 3})
        s += " x" + sgl.gen("b", max_tokens=8, temperature=0)  # the endpoint default

    state = program.run(backend=backend)
    ids = tok("hello", add_special_tokens=False)["input_ids"]
    ref_a = reference(model, [ids], ["static:3"], 8)[0]
    assert state["a"] == tok.decode(ref_a, skip_special_tokens=True)
    ids_b = tok("hello" + state["a"] + " x", add_special_tokens=False)["input_ids"]
    ref_b = reference(model, [ids_b], ["static:2"], 8)[0]
    assert state["b"] == tok.decode(ref_b, skip_special_tokens=True)
    # Meaningful: the per-gen, endpoint and server settings give different outputs here.
    assert ref_a != reference(model, [ids], ["static:2"], 8)[0]
    assert ref_b != reference(model, [ids_b], ["conf_adapt:0.5:3"], 8)[0]


def _stream(url, payload):
    """The ``data:`` events of a server-sent-event response, decoded (``[DONE]`` dropped)."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(req, timeout=120) as r:
        for line in r:
            line = line.decode().strip()
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                events.append(json.loads(line[5:]))
    return events


def test_streamed_output_equals_the_whole_output(server):
    # A step emits several tokens: streaming must still deliver exactly the tokens and text of
    # the non-streamed request, in order, natively and through the OpenAI API.
    base, model = server.base, server.model
    tok = tiny_tokenizer()
    prompt = "abc de"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    for spec in ("static:3", "verify:3"):
        ref = reference(model, [ids], [spec], NEW)[0]
        sampling = {"temperature": 0, "max_new_tokens": NEW, "custom_params": mtp_params(spec)}
        native = _stream(base + "/generate", {"input_ids": ids, "sampling_params": sampling, "stream": True})
        assert len(native) > 1 and native[-1]["output_ids"] == ref  # output_ids accumulate
        chunks = [e["output_ids"] for e in native]
        assert all(a == b[:len(a)] for a, b in zip(chunks, chunks[1:]))  # each event extends the last
        assert native[-1]["text"] == tok.decode(ref, skip_special_tokens=True)
        events = _stream(base + "/v1/completions", {
            "model": "default", "prompt": prompt, "max_tokens": NEW, "temperature": 0, "stream": True,
            "custom_params": mtp_params(spec)})
        text = "".join(e["choices"][0]["text"] for e in events if e.get("choices"))
        assert text == tok.decode(ref, skip_special_tokens=True), spec
