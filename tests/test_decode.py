"""The reference decoder's invariants (issue 3, section 3) on tiny random Llama/Qwen2 models."""

import warnings

import pytest
import torch

import sglang_mtp.kv as kv_module
from sglang_mtp.decode import UntrainedMTPWarning, generate
from sglang_mtp.strategy import Strategy
from tests.models import EOS_ID, hf_greedy, random_prompts, tiny_model, tiny_mtp_model

KINDS = ["llama", "qwen2"]
SMALL_V = 12  # a 12-token vocabulary: random models then often draft correctly (verify accepts)


pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force(model, prompt, strategy, max_new_tokens, mask_id, stops=(EOS_ID,)):
    """Lossy decoding WITHOUT a KV cache: re-run the whole sequence + k-1 masks every step."""
    ctx = model.config.max_position_embeddings
    budget = min(max_new_tokens, ctx - len(prompt))
    seq, out, chunks = list(prompt), [], []
    while len(out) < budget:
        k = max(1, min(strategy.k, ctx - len(seq)))  # no row predicts a position >= ctx
        with torch.no_grad():
            logits = model(torch.tensor([seq + [mask_id] * (k - 1)])).logits[0, len(seq) - 1:].double()
        logits[:, mask_id] = float("-inf")
        conf, tok = logits.softmax(-1).max(-1)
        run = 0
        while run < k and conf[run] >= strategy.scan_threshold:
            run += 1
        block = tok[: max(run, 1)].tolist()
        for i, t in enumerate(block):
            if t in stops:
                block = block[: i + 1]
                break
        block = block[: budget - len(out)]
        out, seq = out + block, seq + block
        chunks.append(len(block))
        if any(t in stops for t in block):
            break
    return out, chunks


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("vocab_size", [SMALL_V, 104])
def test_lossless_strategies_equal_hf_greedy(kind, attn, vocab_size):
    model, mask_id = tiny_mtp_model(kind, attn=attn, vocab_size=vocab_size)
    prompts = random_prompts(4, seed=1, vocab=min(vocab_size, 100))
    want = [hf_greedy(model, p, 24, mask_id) for p in prompts]
    verify_k = []
    for spec in ["ntp", "static:1", "conf_adapt:1.0:4", "verify:2", "verify:4", "verify:8"]:
        res = generate(model, prompts, spec, max_new_tokens=24)
        assert [r.tokens for r in res] == want, spec
        if spec.startswith("conf_adapt"):  # the threshold was above every confidence seen
            assert all(c == 1 for r in res for c in r.chunks)
        if spec.startswith("verify"):
            verify_k += [r.effective_k for r in res]
    if vocab_size == SMALL_V:  # drafts were really accepted, so the accept path ran
        assert max(verify_k) > 1.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("vocab_size", [SMALL_V, 104])
@pytest.mark.parametrize("spec", ["static:2", "static:3", "static:5", "conf_adapt:0.3:6", "conf_adapt:0.6:6",
                                  "conf_adapt:0.9:4"])
def test_cached_lossy_equals_brute_force(kind, vocab_size, spec):
    model, mask_id = tiny_mtp_model(kind, vocab_size=vocab_size)
    prompts = random_prompts(3, seed=2, vocab=min(vocab_size, 100))
    res = generate(model, prompts, spec, max_new_tokens=20)
    strategy = Strategy.parse(spec)
    for p, r in zip(prompts, res):
        assert (r.tokens, r.chunks) == brute_force(model, p, strategy, 20, mask_id)


def test_brute_force_comparison_sees_varied_accept_lengths():
    # Guards the test above against being vacuous: accept lengths must vary within a run.
    model, _ = tiny_mtp_model("qwen2", vocab_size=SMALL_V)
    res = generate(model, random_prompts(3, seed=2, vocab=SMALL_V), "conf_adapt:0.6:6", max_new_tokens=20)
    assert len({c for r in res for c in r.chunks}) >= 3


@pytest.mark.parametrize("kind", KINDS)
def test_cache_compaction_keeps_results(kind, monkeypatch):
    model, mask_id = tiny_mtp_model(kind, vocab_size=SMALL_V)
    compact = kv_module.HoleyKVCache.compact
    calls = []

    def always(self, slack=64):
        calls.append(self.valid.shape[1])
        compact(self, slack=0)

    monkeypatch.setattr(kv_module.HoleyKVCache, "compact", always)
    prompts = random_prompts(3, seed=4, vocab=SMALL_V)
    res = generate(model, prompts, "conf_adapt:0.5:6", max_new_tokens=30, stop_token_ids=())
    for p, r in zip(prompts, res):
        assert (r.tokens, r.chunks) == brute_force(model, p, Strategy.conf_adapt(0.5, 6), 30, mask_id, stops=())
    assert calls


MIXED = ["ntp", "static:3", "conf_adapt:0.5:5", "verify:4", "conf_adapt:0.8:8", "static:2", "verify:8"]


@pytest.mark.parametrize("kind", KINDS)
def test_batch_equals_one_at_a_time_with_mixed_strategies(kind):
    model, _ = tiny_mtp_model(kind, vocab_size=SMALL_V)
    prompts = random_prompts(len(MIXED), seed=5, min_len=2, max_len=15, vocab=SMALL_V)
    batch = generate(model, prompts, MIXED, max_new_tokens=25)
    assert len({r.passes for r in batch}) > 2  # requests really ran at different paces
    for p, s, r in zip(prompts, MIXED, batch):
        one = generate(model, [p], s, max_new_tokens=25)[0]
        assert (r.tokens, r.chunks, r.finish_reason) == (one.tokens, one.chunks, one.finish_reason), s


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spec", ["ntp", "static:4", "conf_adapt:0.4:6", "verify:4"])
def test_stop_token_ends_generation_inclusive(kind, spec):
    model, mask_id = tiny_mtp_model(kind, vocab_size=SMALL_V)
    prompt = random_prompts(1, seed=6, vocab=SMALL_V)[0]
    free = generate(model, [prompt], spec, max_new_tokens=30, stop_token_ids=())[0].tokens
    stop = free[len(free) // 2]  # a token the unconstrained run does emit
    r = generate(model, [prompt], spec, max_new_tokens=30, stop_token_ids=[stop])[0]
    first = free.index(stop)
    assert r.tokens == free[: first + 1] and r.finish_reason == "stop"
    assert sum(r.chunks) == len(r.tokens)


@pytest.mark.parametrize("spec", ["ntp", "static:5", "conf_adapt:0.3:8", "verify:8"])
@pytest.mark.parametrize("max_new", [0, 1, 7])
def test_max_new_tokens_is_respected(spec, max_new):
    model, _ = tiny_mtp_model("llama", vocab_size=SMALL_V)
    res = generate(model, random_prompts(3, seed=7, vocab=SMALL_V), spec, max_new_tokens=max_new,
                   stop_token_ids=())
    for r in res:
        assert len(r.tokens) == max_new == sum(r.chunks)
        assert r.finish_reason == "length"
        assert max(r.chunks, default=0) <= Strategy.parse(spec).k
        assert (r.passes == 0) == (max_new == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_mask_token_is_never_emitted(kind):
    model, mask_id = tiny_mtp_model(kind, vocab_size=SMALL_V)
    prompts = random_prompts(3, seed=8, vocab=SMALL_V)
    specs = ["ntp", "static:3", "conf_adapt:0.5:6", "verify:4"]
    before = [[r.tokens for r in generate(model, prompts, s, max_new_tokens=15)] for s in specs]
    # Make <MTP> the top logit of every row: suppression must hide it completely.
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[mask_id] = 1e4
    model.lm_head = biased
    assert int(model(torch.tensor([prompts[0]])).logits[0, -1].argmax()) == mask_id
    after = [[r.tokens for r in generate(model, prompts, s, max_new_tokens=15)] for s in specs]
    assert after == before
    assert all(mask_id not in t for run in after for t in run)


@pytest.mark.parametrize("spec", ["ntp", "static:4", "conf_adapt:0.5:6", "verify:4"])
def test_prompts_near_the_context_limit(spec):
    model, mask_id = tiny_mtp_model("qwen2", vocab_size=SMALL_V, max_position_embeddings=32)
    prompts = [random_prompts(1, seed=9, min_len=29, max_len=29, vocab=SMALL_V)[0],
               random_prompts(1, seed=10, min_len=31, max_len=31, vocab=SMALL_V)[0]]
    res = generate(model, prompts, spec, max_new_tokens=10, stop_token_ids=())
    assert [len(r.tokens) for r in res] == [3, 1]  # capped so every token has a position < 32
    s = Strategy.parse(spec)
    for p, r in zip(prompts, res):
        if s.kind in ("ntp", "verify"):
            assert r.tokens == hf_greedy(model, p, len(r.tokens), mask_id, stop_token_ids=[])
        else:
            assert (r.tokens, r.chunks) == brute_force(model, p, s, 10, mask_id, stops=())
    with pytest.raises(ValueError, match="prompt 0 has 32 tokens but the model's context is 32"):
        generate(model, [prompts[1] + [5]], spec)


def test_results_carry_stats():
    model, _ = tiny_mtp_model("qwen2", vocab_size=SMALL_V)
    r = generate(model, random_prompts(1, seed=11, vocab=SMALL_V), "conf_adapt:0.3:6", max_new_tokens=20,
                 stop_token_ids=())[0]
    assert r.passes == len(r.chunks) > 0 and sum(r.chunks) == len(r.tokens) == 20
    assert r.effective_k == pytest.approx(20 / r.passes) and r.effective_k > 1
    assert r.wall_time > 0 and r.tokens_per_s == pytest.approx(20 / r.wall_time)
    assert r.strategy == Strategy.conf_adapt(0.3, 6) and r.prompt_len > 0


def test_untrained_checkpoint_warns_for_lossy_strategies_only():
    model, _ = tiny_mtp_model("llama", trained=False)
    prompt = random_prompts(1, seed=12)
    for spec in ["static:2", "conf_adapt:0.9:4"]:
        with pytest.warns(UntrainedMTPWarning, match="not MTP-trained"):
            generate(model, prompt, spec, max_new_tokens=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedMTPWarning)
        for spec in ["ntp", "verify:4", "static:1"]:
            generate(model, prompt, spec, max_new_tokens=3)


def test_bad_inputs_are_refused_clearly():
    plain = tiny_model("llama")  # no mask token
    prompt = random_prompts(1, seed=13)
    assert len(generate(plain, prompt, "ntp", max_new_tokens=4)[0].tokens) == 4  # ntp needs no mask
    with pytest.raises(ValueError, match="has no <MTP> mask token"):
        generate(plain, prompt, "static:2")
    model, _ = tiny_mtp_model("llama")
    with pytest.raises(ValueError, match="list of token-id lists"):
        generate(model, [1, 2, 3])
    with pytest.raises(ValueError, match=r"prompt 1 has token ids outside \[0, 105\)"):
        generate(model, [[1, 2], [1, 999]])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        generate(model, [[]])
    with pytest.raises(ValueError, match="2 entries for 1 prompts"):
        generate(model, prompt, ["ntp", "ntp"])
    with pytest.raises(ValueError, match="threshold"):
        generate(model, prompt, "conf_adapt:1.5:4")


def test_the_kv_cache_goes_by_the_name_the_forward_takes():
    from sglang_mtp.decode import cache_keyword

    class Renamed(torch.nn.Module):  # transformers >= 5.24
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None):
            pass

    class Old(torch.nn.Module):  # transformers < 5.24
        def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs):
            pass

    class Wrapper(torch.nn.Module):  # e.g. an adapter wrapper that passes everything on
        def forward(self, *args, **kwargs):
            pass

    assert cache_keyword(Renamed()) == "cache"
    assert cache_keyword(Old()) == "past_key_values" and cache_keyword(Wrapper()) == "past_key_values"
    model = tiny_model("llama")  # the installed transformers: its own name, and no deprecation warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = generate(model, random_prompts(1), "ntp", max_new_tokens=3, stop_token_ids=())
    assert len(out[0].tokens) == 3
