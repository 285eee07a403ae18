"""Student-forced self-distillation objective: sanity zero, chain-rule scoring, EOS, grads."""

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from sglang_mtp.train.layout import MASK, collate, pack_sequence
from sglang_mtp.train.loss import (block_targets, forward_logits, mtp_loss, mtp_objective,
                                   teacher_input_ids)
from sglang_mtp.train.trainer import frozen_teacher

MASK_ID, EOS, VOCAB = 63, 2, 64


def _model(seed):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                      max_position_embeddings=128)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _batch(k_min, k_max, seed=0, n_seq=3):
    rng = random.Random(seed)
    packs = []
    for _ in range(n_seq):
        ids = [rng.randrange(3, 60) for _ in range(rng.randint(12, 30))] + [EOS]
        packs.append(pack_sequence(ids, MASK_ID, prompt_len=rng.randint(0, 5), eos_token_id=EOS,
                                   seq_len=48, k_max=k_max, k_min=k_min, stride=3, regions=8,
                                   rng=rng))
    return packs, collate(packs)


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_loss_is_exactly_zero_at_step0_for_k1(kind):
    student = _model(0)
    teacher = frozen_teacher(student)
    _, batch = _batch(k_min=1, k_max=1)
    assert batch.n_regions > 0 and not (batch.kind == MASK).any()
    out = mtp_loss(student, teacher, batch, kind=kind, eos_token_id=EOS, ntp_weight=1.0)
    assert out.loss.item() == 0.0 and out.mtp == 0.0 and out.ntp == 0.0
    assert out.agree_block == 1.0


def test_loss_is_positive_with_masks():
    student = _model(0)
    out = mtp_loss(student, frozen_teacher(student), _batch(2, 4)[1], eos_token_id=EOS)
    assert out.mtp > 0 and out.n_mask > 0


def test_teacher_never_receives_gradients():
    student = _model(0)
    teacher = frozen_teacher(student)
    before = copy.deepcopy(teacher.state_dict())
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    for step in range(2):
        out = mtp_loss(student, teacher, _batch(2, 4, seed=step)[1], eos_token_id=EOS,
                       ntp_weight=0.5)
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
        opt.step()
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert not torch.equal(student.state_dict()["lm_head.weight"], before["lm_head.weight"])


def test_teacher_reads_the_students_proposals():
    packs, batch = _batch(2, 5)
    logits = torch.randn(*batch.input_ids.shape, VOCAB)
    ids = teacher_input_ids(logits, batch)
    proposed = logits.argmax(-1)
    for b in range(ids.shape[0]):
        for r in range(ids.shape[1]):
            if batch.kind[b, r] == MASK:  # mask j holds the argmax of row j-1 of its block
                assert batch.block_j[b, r] >= 1 and ids[b, r] == proposed[b, r - 1]
            else:
                assert ids[b, r] == batch.input_ids[b, r]


def _no_mask(logits):
    """Logits with the mask id removed (the objective never proposes or targets it)."""
    return logits.index_fill(-1, torch.tensor([MASK_ID]), -torch.inf)


def _brute_force(student, teacher, seq, i, k, kind):
    """One region by plain causal inference: propose with masks, score by the chain rule."""
    with torch.no_grad():
        s_logits = student(torch.tensor([seq[:i + 1] + [MASK_ID] * (k - 1)])).logits[0, i:]
        proposal = _no_mask(s_logits).argmax(-1).tolist()          # y'_1 .. y'_k
        t_logits = teacher(torch.tensor([seq[:i + 1] + proposal[:k - 1]])).logits[0, i:]
    s_logp, t_logp = F.log_softmax(_no_mask(s_logits), -1), F.log_softmax(_no_mask(t_logits), -1)
    total, ended = 0.0, False
    for j in range(k):
        if j >= 1 and proposal[j - 1] == EOS and not ended:  # the first proposed EOS
            if int(t_logp[j - 1].argmax()) != EOS:
                break                    # not endorsed by the teacher: the rest is dropped
            ended = True
        if ended:                        # endorsed EOS: one-hot EOS target
            total += float(-s_logp[j, EOS])
            continue
        target = int(t_logp[j].argmax())
        if kind == "hard":
            total += float(t_logp[j, target] - s_logp[j, target])
        else:
            p = t_logp[j].exp()
            total += float((torch.xlogy(p, p) - torch.where(p > 0, p * s_logp[j], 0.0)).sum())
    return total


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_objective_equals_region_by_region_chain_rule(kind):
    student, teacher = _model(1), frozen_teacher(_model(2))
    with torch.no_grad():  # make EOS a frequent proposal so the EOS rule is exercised
        student.lm_head.weight[EOS] *= 4
        teacher.lm_head.weight[EOS] *= 4
    rng = random.Random(5)
    seqs = [[rng.randrange(3, 60) for _ in range(n)] + [EOS] for n in (25, 17, 30)]
    packs = [pack_sequence(s, MASK_ID, prompt_len=3, eos_token_id=EOS, seq_len=60, k_max=6,
                           stride=3, regions=8, rng=random.Random(n)) for n, s in enumerate(seqs)]
    batch = collate(packs)
    out = mtp_loss(student, teacher, batch, kind=kind, eos_token_id=EOS, mask_token_id=MASK_ID)
    expected = sum(_brute_force(student, teacher, s, i, k, kind)
                   for s, p in zip(seqs, packs) for i, k in p.regions) / batch.n_regions
    assert out.mtp == pytest.approx(expected, rel=1e-4, abs=1e-5)


def _eos_case(teacher_says_eos_before):
    ids = list(range(10, 20)) + [EOS]
    p = pack_sequence(ids, MASK_ID, eos_token_id=EOS, seq_len=32, k_max=5, offset=0, stride=5,
                      ks=[5])
    batch = collate([p])
    n = batch.input_ids.shape[1]
    teacher_logits = torch.zeros(1, n, VOCAB)
    teacher_logits[..., 7] = 5.0           # the teacher says 7 everywhere ...
    if teacher_says_eos_before:
        teacher_logits[0, 1, EOS] = 9.0    # ... except EOS at block row 1
    teacher_ids = batch.input_ids.clone()
    teacher_ids[0, 2] = EOS                 # the student proposed EOS as y'_2 (mask slot 2)
    return block_targets(teacher_logits, teacher_ids, batch, EOS, MASK_ID), n


def test_eos_rule_endorsed_eos_ends_the_block():
    (target, forced, valid), n = _eos_case(teacher_says_eos_before=True)
    # block rows 0..4: row 1 targets EOS (teacher), rows 2-4 follow an endorsed EOS
    assert target[0, :5].tolist() == [7, EOS, EOS, EOS, EOS]
    assert forced[0, :5].tolist() == [False, False, True, True, True]
    assert valid[0, :5].all() and not valid[0, 5:].any()
    assert target[0, 5:].tolist() == [7] * (n - 5)  # truth rows are untouched


def test_eos_rule_drops_rows_after_an_unendorsed_eos():
    (target, forced, valid), _ = _eos_case(teacher_says_eos_before=False)
    # an EOS the teacher did not predict must not be rewarded: rows 2-4 are dropped
    assert valid[0, :5].tolist() == [True, True, False, False, False]
    assert not forced.any() and target[0, :2].tolist() == [7, 7]


def test_mask_id_is_never_proposed_or_targeted():
    _, batch = _batch(2, 4)
    logits = torch.randn(*batch.input_ids.shape, VOCAB)
    logits[..., MASK_ID] = 100.0
    ids = teacher_input_ids(logits, batch, MASK_ID)
    target, _, _ = block_targets(logits, ids, batch, EOS, MASK_ID)
    assert (ids[batch.kind == MASK] != MASK_ID).all()
    assert (target != MASK_ID).all()


def test_bad_kind_is_named():
    _, batch = _batch(2, 3)
    logits = torch.randn(*batch.input_ids.shape, VOCAB)
    with pytest.raises(ValueError, match="kind"):
        mtp_objective(logits, logits, batch.input_ids, batch, kind="medium")


def test_forward_logits_shape():
    _, batch = _batch(2, 4)
    assert forward_logits(_model(0), batch).shape == (*batch.input_ids.shape, VOCAB)
