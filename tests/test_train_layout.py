"""MTP training layout: regions, replicated truth, position ids, the blocked causal mask."""

import random

import pytest
import torch

from sglang_mtp.train.layout import (MASK, PAD, TRUTH, collate, hf_attention_mask,
                                     pack_sequence, render_pattern)

MASK_ID, EOS = 99, 2


def _tiny_llama(attn="sdpa", vocab=100):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                      max_position_embeddings=128)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def test_small_case_pattern_is_exactly_the_paper_layout():
    # x0..x7 then EOS; prompt of 2 tokens; two regions at prefixes 2 (k=3) and 5 (k=2).
    ids = [10, 11, 12, 13, 14, 15, 16, 17, EOS]
    p = pack_sequence(ids, MASK_ID, prompt_len=3, eos_token_id=EOS, seq_len=64, k_max=3,
                      stride=3, offset=0, ks=[3, 2])
    picture = render_pattern(p)
    print("\n" + picture)
    assert p.regions[:2] == [(2, 3), (5, 2)]
    # masks right after each prefix; truth continues after the span with ORIGINAL positions
    assert p.input_ids[:9] == [10, 11, 12, MASK_ID, MASK_ID, 13, 14, 15, MASK_ID]
    assert p.position_ids[:9] == [0, 1, 2, 3, 4, 3, 4, 5, 6]
    expected = "\n".join([
        "x........",   # x0
        "xx.......",   # x1
        "xxx......",   # x2 (prefix of region 0)
        "xxxx.....",   # mask 1 of region 0: upstream truth + itself
        "xxxxx....",   # mask 2 of region 0: upstream truth + mask 1
        "xxx..x...",   # x3: skips the mask span
        "xxx..xx..",   # x4
        "xxx..xxx.",   # x5 (prefix of region 1)
        "xxx..xxxx",   # mask 1 of region 1: never sees region 0's masks
    ])
    rows = [line.split()[-1][:9] for line in picture.splitlines()[:9]]
    assert "\n".join(rows) == expected


def test_regions_follow_the_paper_defaults_and_are_seeded():
    ids = list(range(10, 90)) + [EOS]
    a = pack_sequence(ids, MASK_ID, seq_len=96, k_max=6, rng=random.Random(7))
    b = pack_sequence(ids, MASK_ID, seq_len=96, k_max=6, rng=random.Random(7))
    c = pack_sequence(ids, MASK_ID, seq_len=96, k_max=6, rng=random.Random(8))
    assert a == b and a != c
    assert len(a.regions) <= 96 // (2 * 6)  # M = N / (2 k_max)
    assert all(2 <= k <= 6 for _, k in a.regions)
    assert len(a.input_ids) <= 96
    prefixes = [i for i, _ in a.regions]
    assert all(q - p == 6 for p, q in zip(prefixes, prefixes[1:]))  # grid of stride k_max
    offsets = {pack_sequence(ids, MASK_ID, seq_len=96, k_max=6, rng=random.Random(s)).regions[0][0]
               for s in range(40)}
    assert offsets == set(range(6))  # the random offset reaches every grid phase


def test_every_region_is_laid_out_consistently():
    rng = random.Random(3)
    for trial in range(50):
        n = rng.randint(3, 60)
        ids = [rng.randint(3, 90) for _ in range(n - 1)] + [EOS]
        prompt = rng.randint(0, n - 2)
        p = pack_sequence(ids, MASK_ID, prompt_len=prompt, eos_token_id=EOS,
                          seq_len=rng.randint(16, 80), k_max=rng.randint(1, 6), k_min=1, rng=rng)
        truth = [(t, pos) for t, pos, kd in zip(p.input_ids, p.position_ids, p.kind) if kd == TRUTH]
        assert [pos for _, pos in truth] == list(range(len(truth)))  # truth order, no gaps
        assert [t for t, _ in truth] == ids[:len(truth)]
        for r, (i, k) in enumerate(p.regions):
            assert i >= max(prompt - 1, 0) and i < n - 1   # predicts response tokens only
            row0 = p.span.index(r)
            assert p.position_ids[row0] == i and p.kind[row0] == TRUTH
            assert p.kind[row0 + 1:row0 + k] == [MASK] * (k - 1)
            assert p.position_ids[row0:row0 + k] == list(range(i, i + k))
            assert p.block_j[row0:row0 + k] == list(range(k))
        # EOS rule: the first region reaching EOS is the last, nothing is laid out after it
        hits = [r for r, (i, k) in enumerate(p.regions) if i + k >= n - 1]
        if hits:
            assert hits[0] == len(p.regions) - 1
            last = p.span.index(hits[0])
            assert len(p.input_ids) == last + p.regions[-1][1]


def test_k1_regions_have_no_masks():
    ids = list(range(10, 40)) + [EOS]
    p = pack_sequence(ids, MASK_ID, eos_token_id=EOS, seq_len=64, k_max=1, k_min=1,
                      rng=random.Random(0))
    assert MASK not in p.kind and p.regions and all(k == 1 for _, k in p.regions)
    assert p.input_ids == ids[:len(p.input_ids)]


def test_collate_pads_and_makes_spans_unique():
    ids = list(range(10, 40)) + [EOS]
    packs = [pack_sequence(ids[:m], MASK_ID, seq_len=48, k_max=4, rng=random.Random(m))
             for m in (31, 12)]
    b = collate(packs, pad_token_id=0)
    n = max(len(p.input_ids) for p in packs)
    assert b.input_ids.shape == (2, n) and b.allowed.shape == (2, n, n)
    assert b.n_regions == sum(len(p.regions) for p in packs)
    spans = b.span[b.span >= 0].unique()
    assert len(spans) == b.n_regions
    pad = b.kind[1] == PAD
    assert pad.any()
    # padding attends to itself only (an empty row would give NaN in SDPA)
    assert torch.equal(b.allowed[1][pad], torch.eye(n, dtype=torch.bool)[pad])
    # no real token attends to padding
    assert not b.allowed[1][~pad][:, pad].any()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_equal_plain_causal_inference(attn):
    """Truth rows = the plain model on the truth; block rows = inference with k-1 masks."""
    model = _tiny_llama(attn)
    rng = random.Random(1)
    seqs = [[rng.randrange(3, 98) for _ in range(n)] + [EOS] for n in (23, 14)]
    packs = [pack_sequence(s, MASK_ID, prompt_len=2, eos_token_id=EOS, seq_len=48, k_max=5,
                           rng=random.Random(i)) for i, s in enumerate(seqs)]
    b = collate(packs)
    with torch.no_grad():
        logits = model(input_ids=b.input_ids, position_ids=b.position_ids,
                       attention_mask=hf_attention_mask(b.allowed, model)).logits
        for row, (s, p) in enumerate(zip(seqs, packs)):
            full = model(torch.tensor([s])).logits[0]
            for r, (pos, kd) in enumerate(zip(p.position_ids, p.kind)):
                if kd == TRUTH:
                    torch.testing.assert_close(logits[row, r], full[pos], atol=1e-5, rtol=1e-5)
            for reg, (i, k) in enumerate(p.regions):
                # inference: context x_0..x_i followed by k-1 masks, plain causal attention
                ref = model(torch.tensor([s[:i + 1] + [MASK_ID] * (k - 1)])).logits[0, i:]
                r0 = p.span.index(reg)
                torch.testing.assert_close(logits[row, r0:r0 + k], ref, atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="k_min"):
        pack_sequence([1, 2, 3], MASK_ID, k_max=2, k_min=3)
    with pytest.raises(ValueError, match="ids"):
        pack_sequence([], MASK_ID)
    with pytest.raises(ValueError, match="packed_list"):
        collate([])
    from types import SimpleNamespace
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    with pytest.raises(ValueError, match="sdpa"):
        hf_attention_mask(torch.ones(1, 2, 2, dtype=torch.bool), flash)
