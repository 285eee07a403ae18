"""Sampling (temperature > 0): the sample_scan op against its reference, the truncation
rules, Gumbel-max marginals, and the reference decoder's sampled strategies (verify equals
plain sampling, statistically and token for token; lossy limits)."""

import collections
import warnings

import pytest
import torch

from sglang_mtp import ops
from sglang_mtp.decode import generate
from sglang_mtp.ops.reference import sample_scan_ref
from sglang_mtp.sampling import Sampling, noise_uniform, truncate
from tests.models import random_prompts, tiny_mtp_model


def scan_case(R=12, V=3000, B=4, dtype=torch.float32, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(R, V, generator=gen) * 3).to(dtype)
    per = R // B
    start = (torch.arange(B) * per).int()
    length = torch.randint(1, per + 1, (B,), generator=gen).int()
    thr = torch.rand(B, generator=gen) * 0.6
    inv_t = torch.tensor([0.0, 1.0, 2.5, 0.7])[torch.randint(0, 4, (R,), generator=gen)]
    seeds = torch.randint(-(2**62), 2**62, (R,), generator=gen)
    pos = torch.randint(0, 10_000, (R,), generator=gen)
    args = [logits, start, length, thr]
    return [t.to(device) for t in args], [t.to(device) for t in (inv_t, seeds, pos)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sample_scan_matches_reference(device, dtype):
    for seed in range(3):
        (logits, start, length, thr), (inv_t, seeds, pos) = scan_case(dtype=dtype, seed=seed, device=device)
        stops = torch.tensor([7, 11], device=device)
        got = ops.sample_scan(logits, start, length, thr, stops, 5, inv_t, seeds, pos)
        want = sample_scan_ref(logits.cpu(), start.cpu(), length.cpu(), thr.cpu(), stops.cpu(), 5, inv_t.cpu(),
                               seeds.cpu(), pos.cpu())
        assert torch.equal(got[0].cpu(), want[0])
        torch.testing.assert_close(got[1].cpu(), want[1], atol=2e-6, rtol=1e-4)
        assert torch.equal(got[2].cpu(), want[2])
        assert not (got[0] == 5).any(), "the suppressed id was sampled"


def test_sample_scan_greedy_rows_equal_confidence_scan(device):
    (logits, start, length, thr), (_, seeds, pos) = scan_case(device=device)
    zero = torch.zeros(logits.shape[0], device=device)
    got = ops.sample_scan(logits, start, length, thr, None, -1, zero, seeds, pos)
    want = ops.confidence_scan(logits, start, length, thr, None, -1)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_sample_scan_special_rows(device):
    inf = float("inf")
    logits = torch.tensor([[0.0, inf, 1.0, inf],  # +inf: the greedy rule (first +inf, 1/2)
                           [-inf, -inf, -inf, -inf],  # nothing finite: lowest id, confidence 0
                           [float("nan"), 2.0, -inf, 2.0],  # NaN is -inf; samples 1 or 3
                           [5.0, 5.0, 5.0, 5.0]], device=device)
    one = torch.ones(4, device=device)
    b = torch.arange(4, dtype=torch.int32, device=device)
    tok, conf, acc = ops.sample_scan(logits, b, torch.ones_like(b), torch.zeros(4, device=device), None, -1, one,
                                     torch.arange(4, device=device), torch.zeros(4, dtype=torch.int64, device=device))
    assert tok[:2].tolist() == [1, 0] and conf[:2].tolist() == [0.5, 0.0]
    assert tok[2].item() in (1, 3) and conf[2].item() == pytest.approx(0.5)
    assert conf[3].item() == pytest.approx(0.25) and acc.tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("bad, message", [
    (dict(inv_temperature=torch.zeros(3)), "inv_temperature must have R"),
    (dict(seed=torch.zeros(4)), "seed must be Long"),
    (dict(inv_temperature=-torch.ones(4)), "inv_temperature\\[0\\] must be finite and >= 0"),
    (dict(position=torch.zeros(4, 1, dtype=torch.int64)), "position must be 1-D"),
])
def test_sample_scan_rejects_bad_input(bad, message):
    args = dict(inv_temperature=torch.ones(4), seed=torch.zeros(4, dtype=torch.int64),
                position=torch.zeros(4, dtype=torch.int64))
    args.update(bad)
    b = torch.zeros(1, dtype=torch.int32)
    with pytest.raises(ValueError, match=message):
        ops.sample_scan(torch.randn(4, 9), b, b + 1, torch.zeros(1), None, -1, **args)


def test_noise_is_uniform_and_decorrelated():
    u = noise_uniform([1, 1, 2], [10, 11, 10], 50_000)
    assert u.min() > 0 and u.max() < 1
    assert abs(float(u.mean()) - 0.5) < 0.005
    # neighbouring positions and seeds give unrelated streams
    assert abs(float(torch.corrcoef(torch.from_numpy(u.astype("float64")))[0, 1:].abs().max())) < 0.02


def test_gumbel_max_marginal_is_the_softmax():
    """One row sampled with 20000 positions: frequencies match softmax(z) (chi-square)."""
    V, N = 6, 20_000
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 0.3]]).repeat(N, 1)
    b = torch.arange(N, dtype=torch.int32)
    inv_t = torch.full((N,), 1 / 0.8)
    tok, conf, _ = ops.sample_scan(logits, b, torch.ones_like(b), torch.zeros(N), None, -1, inv_t,
                                   torch.full((N,), 7, dtype=torch.int64), torch.arange(N))
    p = torch.softmax(logits[0] / 0.8, 0)
    counts = torch.bincount(tok, minlength=V).double()
    assert chi_square_p(counts, p.double() * N, dof=V - 1) > 1e-3
    torch.testing.assert_close(conf, p[tok])


def test_truncate_follows_sglang_rules():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 40, generator=gen) * 2
    inv_t = torch.tensor([1.0, 2.0, 0.5, 1.0, 1.0, 0.0])
    top_k = torch.tensor([5, 1 << 30, 1 << 30, 3, 1 << 30, 2])
    top_p = torch.tensor([1.0, 0.8, 1.0, 0.5, 1.0, 0.1])
    min_p = torch.tensor([0.0, 0.0, 0.1, 0.0, 0.3, 0.0])
    out = truncate(logits, inv_t, top_k, top_p, min_p, suppress_token_id=4)
    for r in range(6):
        kept = (out[r] > float("-inf")).nonzero().squeeze(1).tolist()
        x = logits[r].clone()
        x[4] = float("-inf")
        if inv_t[r] == 0:  # greedy rows only lose the suppressed id
            assert torch.equal(out[r], x)
            continue
        p = torch.softmax(x * inv_t[r], 0)
        order = sorted(range(40), key=lambda i: -p[i].item())
        want, mass = [], 0.0
        for rank, i in enumerate(order):
            if rank < top_k[r] and mass <= top_p[r] + 1e-6 and p[i] >= min_p[r] * p[order[0]]:
                want.append(i)
            mass += p[i].item()
        assert sorted(kept) == sorted(want), r
        assert 4 not in kept


def chi_square_p(observed, expected, dof):
    stat = ((observed - expected) ** 2 / expected).sum()
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def two_sample_p(a, b, min_count=10):
    """Chi-square homogeneity test of two equal-size samples; rare categories pooled."""
    ca, cb = collections.Counter(a), collections.Counter(b)
    keys = [k for k in set(ca) | set(cb) if ca[k] + cb[k] >= min_count]
    rows = [[ca[k], cb[k]] for k in keys]
    rows.append([len(a) - sum(r[0] for r in rows), len(b) - sum(r[1] for r in rows)])
    t = torch.tensor([r for r in rows if sum(r) > 0], dtype=torch.float64)
    expected = t.sum(1, keepdim=True) * t.sum(0, keepdim=True) / t.sum()
    stat = ((t - expected) ** 2 / expected).sum()
    return float(torch.special.gammaincc(torch.tensor((t.shape[0] - 1) / 2, dtype=torch.float64), stat / 2))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_mtp_model()[0].eval()


def first_tokens(model, strategy, n, seed0, temperature=0.8, count=3):
    prompt = random_prompts(1, seed=3)[0]
    out = generate(model, [prompt] * n, strategy, count, stop_token_ids=(), sampling=temperature,
                   seed=list(range(seed0, seed0 + n)))
    return [tuple(r.tokens) for r in out]


def test_verify_sampling_is_lossless_and_a_biased_variant_is_caught(model, one_thread):
    """4000 seeded samples of the first 3 tokens: verify vs plain sampling (independent seeds)
    pass a chi-square homogeneity test at alpha = 0.001; always accepting the drafts
    (static k, the biased variant) fails it by far."""
    plain = first_tokens(model, "ntp", 4000, 1_000_000)
    verify = first_tokens(model, "verify:3", 4000, 0)
    biased = first_tokens(model, "static:3", 4000, 0)
    assert two_sample_p(verify, plain) > 1e-3
    assert two_sample_p(biased, plain) < 1e-6


def test_verify_sampling_equals_plain_sampling_token_for_token(model):
    prompts = random_prompts(8, seed=5)
    for temperature in (1.0, 0.6, dict(temperature=0.9, top_k=20, top_p=0.9, min_p=0.02)):
        plain = generate(model, prompts, "ntp", 24, stop_token_ids=(), sampling=temperature, seed=list(range(8)))
        verify = generate(model, prompts, "verify:4", 24, stop_token_ids=(), sampling=temperature,
                          seed=list(range(8)))
        assert [r.tokens for r in verify] == [r.tokens for r in plain]
        assert sum(r.passes for r in verify) < sum(r.passes for r in plain)  # drafts were accepted


def test_sampled_requests_are_reproducible_alone_or_in_any_batch(model):
    prompts = random_prompts(6, seed=2)
    strategies = ["verify:4", "static:3", "conf_adapt:0.3:4", "ntp", "conf_adapt:0.9:3", "verify:2"]
    samplings = [0.7, 1.0, dict(temperature=1.0, top_p=0.8), 0.5, None, 1.2]
    batch = generate(model, prompts, strategies, 16, stop_token_ids=(), sampling=samplings, seed=list(range(6)))
    for i in range(6):
        alone = generate(model, [prompts[i]], strategies[i], 16, stop_token_ids=(), sampling=samplings[i],
                         seed=i)[0]
        assert alone.tokens == batch[i].tokens
    other_seeds = generate(model, prompts, strategies, 16, stop_token_ids=(), sampling=samplings,
                           seed=list(range(10, 16)))
    assert [r.tokens for r in other_seeds] != [r.tokens for r in batch]


def test_lossy_sampling_limits(model):
    prompts = random_prompts(6, seed=4)
    seeds = list(range(6))
    plain = generate(model, prompts, "ntp", 20, stop_token_ids=(), sampling=1.0, seed=seeds)
    # tau = 1: no sampled token is certain, so one token per pass: plain sampling
    strict = generate(model, prompts, "conf_adapt:1.0:4", 20, stop_token_ids=(), sampling=1.0, seed=seeds)
    assert [r.tokens for r in strict] == [r.tokens for r in plain]
    assert all(r.effective_k == 1.0 for r in strict)
    # temperature -> 0: static / verify / ntp give the greedy tokens; ConfAdapt is certain
    # of every token, so it accepts whole blocks like static k
    for strategy in ("static:3", "verify:4", "ntp"):
        greedy = generate(model, prompts, strategy, 20, stop_token_ids=())
        cold = generate(model, prompts, strategy, 20, stop_token_ids=(), sampling=1e-4, seed=seeds)
        assert [r.tokens for r in cold] == [r.tokens for r in greedy], strategy
    cold = generate(model, prompts, "conf_adapt:0.9:3", 20, stop_token_ids=(), sampling=1e-4, seed=seeds)
    assert [r.tokens for r in cold] == [r.tokens for r in generate(model, prompts, "static:3", 20,
                                                                   stop_token_ids=())]


def test_lossy_block_rows_sample_their_own_distributions(model):
    """static:2 from one prompt: the second token's frequencies match the mask row's softmax."""
    prompt = random_prompts(1, seed=6)[0]
    N = 6000
    out = generate(model, [prompt] * N, "static:2", 2, stop_token_ids=(), sampling=1.0, seed=list(range(N)))
    mask_id = model.config.mtp_mask_token_id
    with torch.no_grad():
        logits = model(torch.tensor([prompt + [mask_id]])).logits[0, -2:]
    logits[:, mask_id] = float("-inf")
    for row in range(2):
        p = torch.softmax(logits[row].double(), 0)
        counts = torch.bincount(torch.tensor([r.tokens[row] for r in out]), minlength=p.numel()).double()
        big = p * N >= 5
        obs = torch.cat([counts[big], counts[~big].sum()[None]])
        exp = torch.cat([p[big] * N, (p[~big] * N).sum()[None]])
        assert chi_square_p(obs, exp, dof=int(big.sum())) > 1e-3, row


def test_sampling_arguments_are_checked(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bad, message in ((dict(sampling=-1.0), "temperature"), (dict(sampling=dict(top_p=0.0)), "top_p"),
                             (dict(sampling=dict(top_k=0)), "top_k"), (dict(sampling=dict(tempreature=1)), "unknown"),
                             (dict(sampling=1.0, seed=1.5), "seed"), (dict(sampling=[1.0], seed=0), "1 entries")):
            with pytest.raises(ValueError, match=message):
                generate(model, [[1, 2], [3, 4]], "verify:2", 4, **bad)
    assert Sampling(temperature=0.0).greedy and Sampling(top_k=1).greedy and not Sampling().greedy
