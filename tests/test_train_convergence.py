"""Short convergence run: MTP self-distillation makes a tiny model decode in fewer passes.

Task: count upwards (mod 20) from a random start for 12 tokens, then EOS. A tiny Llama
learns it by next-token training (the teacher), gets the <MTP> token, and is MTP-trained
for a few hundred steps: the loss must fall, the mask rows must come to agree with the
teacher, and the reference decoder's ConfAdapt effective k must rise while the output stays
the teacher's greedy output.
"""

import pytest
import torch

from sglang_mtp.convert import add_mask_token
from sglang_mtp.decode import UntrainedMTPWarning, generate
from sglang_mtp.toy.model import pretrain_ntp, tiny_llama
from sglang_mtp.train.data import Example
from sglang_mtp.train.trainer import TrainConfig, frozen_teacher, train

BOS, EOS, FIRST, N_NUM, LENGTH = 1, 2, 4, 20, 12


def _sequence(start):
    return [BOS] + [FIRST + (start + j) % N_NUM for j in range(LENGTH)] + [EOS]


def _decode_stats(model, prompts, spec):
    results = generate(model, prompts, strategy=spec, max_new_tokens=16, stop_token_ids=[EOS])
    tokens = sum(len(r.tokens) for r in results)
    return [r.tokens for r in results], tokens / sum(r.passes for r in results)


def test_mtp_training_converges_and_speeds_up_decoding(one_thread):
    torch.manual_seed(0)
    examples = [Example(ids=_sequence(s), prompt_len=3) for s in range(N_NUM)] * 8
    model = tiny_llama(FIRST + N_NUM, hidden=32, layers=2, heads=2, intermediate=64, seed=0)
    pretrain_ntp(model, examples, steps=150, lr=1e-2, batch_size=16, warmup=10, log=None)
    mask_id = add_mask_token(model)
    prompts = [_sequence(s)[:3] for s in range(N_NUM)]
    greedy, _ = _decode_stats(model, prompts, "ntp")
    assert all(g == _sequence(s)[3:] for s, g in zip(range(N_NUM), greedy)), "teacher not learned"
    with pytest.warns(UntrainedMTPWarning):  # the mask token is untrained: garbage blocks
        before, eff_k_before = _decode_stats(model, prompts, "conf_adapt:0.9:4")
    assert sum(b == g for b, g in zip(before, greedy)) < N_NUM // 2

    cfg = TrainConfig(steps=120, lr=3e-3, warmup_steps=10, batch_size=16, seq_len=48, k_max=4,
                      stride=2, regions=6, seed=0)
    history = train(model, frozen_teacher(model), examples, cfg, mask_token_id=mask_id,
                    eos_token_id=EOS, progress=False)
    model.config.mtp_trained = True
    first = sum(r["mtp"] for r in history[:10]) / 10
    last = sum(r["mtp"] for r in history[-10:]) / 10
    assert last < 0.3 * first, (first, last)
    assert history[-1]["agree_mask"] > 0.9 > history[0]["agree_mask"]

    adapted, eff_k = _decode_stats(model, prompts, "conf_adapt:0.9:4")
    _, eff_k_ntp = _decode_stats(model, prompts, "ntp")
    assert eff_k_ntp == 1.0 and eff_k > 2.5 and eff_k > eff_k_before + 1, (eff_k, eff_k_before)
    assert sum(a == g for a, g in zip(adapted, greedy)) >= 0.9 * N_NUM
