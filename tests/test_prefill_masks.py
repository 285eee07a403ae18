"""Masks ride the prefill (sglang_plugin/prefill_masks.py) on fake SGLang batches: which
requests get masks, how the extend input is rewritten for one forward and restored after it,
where each request's block rows are, and that every mask slot goes back to the pool."""

from types import SimpleNamespace

import pytest
import torch

from sglang_mtp.sglang_plugin import prefill_masks

MASK = 99


class Pool:
    """A token-slot allocator that records what is taken and returned."""

    def __init__(self, free=100):
        self.free_slots = list(range(500, 500 + free))
        self.freed = []

    def available_size(self):
        return len(self.free_slots)

    def alloc(self, n):
        if n > len(self.free_slots):
            return None
        out, self.free_slots = self.free_slots[:n], self.free_slots[n:]
        return torch.tensor(out, dtype=torch.int64)

    def free(self, slots):
        self.freed += slots.tolist()


def fake_batch(lens=(3, 2, 4), prefix=(0, 5, 1), **over):
    n = sum(lens)
    seq = [p + e for p, e in zip(prefix, lens)]
    pool_rows = [2, 0, 1]
    reqs = [SimpleNamespace(extend_end=s, full_untruncated_fill_ids=list(range(s)),
                            kv=SimpleNamespace(req_pool_idx=r)) for s, r in zip(seq, pool_rows)]
    b = SimpleNamespace(
        reqs=reqs, input_ids=torch.arange(10, 10 + n), out_cache_loc=torch.arange(100, 100 + n),
        extend_lens=list(lens), seq_lens=torch.tensor(seq), seq_lens_cpu=torch.tensor(seq),
        seq_lens_sum=sum(seq), extend_num_tokens=n, req_pool_indices=torch.tensor(pool_rows),
        return_logprob=False, decoding_reqs=None, input_embeds=None, multimodal_inputs=None)
    for k, v in over.items():
        setattr(b, k, v)
    return b


def test_mask_counts():
    pool = Pool()
    assert prefill_masks.mask_counts(fake_batch(), [4, 1, 3], pool, 1, 64, 64) == [3, 0, 2]
    for bad in (dict(return_logprob=True), dict(decoding_reqs=[object()]), dict(seq_lens_cpu=None),
                dict(input_embeds=torch.zeros(1)), dict(multimodal_inputs=[None, object(), None])):
        assert prefill_masks.mask_counts(fake_batch(**bad), [4, 1, 3], pool, 1, 64, 64) is None, bad
    assert prefill_masks.mask_counts(fake_batch(), [4, 1, 3], pool, 16, 64, 64) is None  # paged KV
    assert prefill_masks.mask_counts(fake_batch(), [4, 1, 3], Pool(free=4), 1, 64, 64) is None  # no room
    middle = fake_batch()
    middle.reqs[2].extend_end = 3  # a middle chunk of a longer prompt: no masks for it
    assert prefill_masks.mask_counts(middle, [4, 1, 3], pool, 1, 64, 64) == [3, 0, 0]
    assert prefill_masks.mask_counts(fake_batch(), [4, 1, 3], pool, 1, 6, 64) == [3, 0, 0]  # table width
    assert prefill_masks.mask_counts(fake_batch(), [1, 1, 1], pool, 1, 64, 64) is None
    # prompts 3, 7 and 5 long: a block's last row must predict a position inside the context
    assert prefill_masks.mask_counts(fake_batch(), [4, 1, 3], pool, 1, 64, 8) == [3, 0, 2]
    assert prefill_masks.mask_counts(fake_batch(), [4, 1, 3], pool, 1, 64, 7) == [3, 0, 0]
    assert prefill_masks.mask_counts(fake_batch(), [4, 1, 3], pool, 1, 64, 6) is None


def test_masked_extend_rewrites_one_forward_and_gives_every_slot_back():
    batch, pool = fake_batch(), Pool()
    table = torch.zeros(3, 16, dtype=torch.int32)
    before = {n: getattr(batch, n) for n in ("input_ids", "out_cache_loc", "extend_lens", "seq_lens",
                                              "seq_lens_cpu", "seq_lens_sum", "extend_num_tokens")}
    with prefill_masks.masked_extend(batch, [2, 0, 1], MASK, table, pool) as last_rows:
        assert batch.input_ids.tolist() == [10, 11, 12, MASK, MASK, 13, 14, 15, 16, 17, 18, MASK]
        assert batch.out_cache_loc.tolist() == [100, 101, 102, 500, 501, 103, 104, 105, 106, 107, 108, 502]
        assert batch.extend_lens == [5, 2, 5] and batch.extend_num_tokens == 12
        assert batch.seq_lens.tolist() == [5, 7, 6] and batch.seq_lens_cpu.tolist() == [5, 7, 6]
        assert batch.seq_lens_sum == 18
        assert last_rows == [2, 6, 10]  # each request's last prompt row in the new stream
        # The masks' slots sit right after each prompt in its req_to_token row.
        assert table[2, 3:5].tolist() == [500, 501] and table[1, 5].item() == 502
        rows = prefill_masks.block_rows(last_rows, [2, 0, 1])
        assert rows["sel"] == [0, 2] and rows["K"] == 3
        assert rows["rows"].tolist() == [2, 3, 4, 10, 11, 11]  # a shorter block repeats its last row
    for name, value in before.items():
        assert getattr(batch, name) is value, name
    assert sorted(pool.freed) == [500, 501, 502] and pool.available_size() == 97


@pytest.mark.parametrize("counts", [[0, 3, 0], [2, 0, 0], [0, 0, 1]])
def test_masked_extend_places_masks_between_unmasked_neighbours(counts):
    batch, pool = fake_batch(), Pool()
    table = torch.zeros(3, 16, dtype=torch.int32)
    prompts = [[10, 11, 12], [13, 14], [15, 16, 17, 18]]
    with prefill_masks.masked_extend(batch, counts, MASK, table, pool) as last_rows:
        want, rows = [], []
        for p, m in zip(prompts, counts):
            want += p
            rows.append(len(want) - 1)
            want += [MASK] * m
        assert batch.input_ids.tolist() == want and last_rows == rows
        loc = batch.out_cache_loc.tolist()
        assert sorted(x for x in loc if x >= 500) == list(range(500, 500 + sum(counts)))
        assert [x for x in loc if x < 500] == list(range(100, 109))  # the prompts' slots keep their order
        assert batch.seq_lens_sum == 3 + 7 + 5 + sum(counts)
    assert len(pool.freed) == sum(counts)


def test_masked_extend_one_request():
    batch, pool = fake_batch(lens=(4,), prefix=(2,)), Pool()
    batch.reqs[0].kv.req_pool_idx, batch.req_pool_indices = 1, torch.tensor([1])
    table = torch.zeros(3, 16, dtype=torch.int32)
    with prefill_masks.masked_extend(batch, [3], MASK, table, pool) as last_rows:
        assert batch.input_ids.tolist() == [10, 11, 12, 13, MASK, MASK, MASK] and last_rows == [3]
        assert batch.out_cache_loc.tolist() == [100, 101, 102, 103, 500, 501, 502]
        assert batch.seq_lens.tolist() == [9] and batch.seq_lens_sum == 9
        assert table[1, 6:9].tolist() == [500, 501, 502]


def test_masked_extend_restores_the_batch_when_the_forward_fails():
    batch, pool = fake_batch(), Pool()
    ids = batch.input_ids
    with pytest.raises(RuntimeError, match="forward failed"):
        with prefill_masks.masked_extend(batch, [1, 1, 1], MASK, torch.zeros(3, 16, dtype=torch.int32), pool):
            raise RuntimeError("forward failed")
    assert batch.input_ids is ids and len(pool.freed) == 3


class _LogitsProcessor:
    """The shape of SGLang's processor: keep each request's last row, one lm_head call."""

    def __init__(self, weight, dp_attention=False):
        self.weight, self.calls = weight, []
        self.do_tensor_parallel_all_gather_dp_attn = dp_attention

    def forward(self, input_ids, hidden_states, lm_head, logits_metadata):
        last = hidden_states[logits_metadata["last_rows"]]
        return SimpleNamespace(next_token_logits=self._get_logits(last, lm_head, logits_metadata))

    def _get_logits(self, hidden_states, lm_head, logits_metadata, embedding_bias=None, use_logits_buffer=True):
        self.calls.append(hidden_states.shape[0])
        return hidden_states @ self.weight.T


def _installed(dp_attention=False, mask_id=3):
    torch.manual_seed(0)
    weight, hidden = torch.randn(11, 4), torch.randn(12, 4)
    lp = _LogitsProcessor(weight, dp_attention)
    return prefill_masks.PrefillLogits(SimpleNamespace(logits_processor=lp), mask_id), lp, weight, hidden


@pytest.mark.parametrize("dp_attention", [False, True])
@pytest.mark.parametrize("everyone", [True, False])
def test_block_rows_ride_the_processors_lm_head_call(dp_attention, everyone, monkeypatch):
    LogitsMetadata = pytest.importorskip("sglang.srt.layers.logits_processor").LogitsMetadata
    monkeypatch.setattr(LogitsMetadata, "from_forward_batch", staticmethod(lambda meta: meta))
    hook, lp, weight, hidden = _installed(dp_attention)
    # requests 0 and 2 carry masks (blocks: rows 2-4 and 9-11 with K = 4); in the mixed
    # batch request 1 (last row 6) has none
    box = {"rows": torch.tensor([2, 3, 4, 4, 9, 10, 11, 11]), "sel": [0, 2] if not everyone else [0, 1], "K": 4}
    last = [4, 6, 11] if not everyone else [4, 11]
    hook.begin(box)
    out = lp.forward(None, hidden, None, {"last_rows": torch.tensor(last)})
    hook.end()
    torch.testing.assert_close(box["logits"], hidden[box["rows"]] @ weight.T)
    # one lm_head call unless DP attention; a masked request's row is then its block's row 0
    rows = last if dp_attention else ([2, 6, 9] if not everyone else [2, 9])
    want = hidden[rows] @ weight.T
    want[:, 3] = float("-inf")  # <MTP> is never t1
    torch.testing.assert_close(out.next_token_logits, want)
    if dp_attention:  # the block rows take a call of their own; SGLang's rows stay the last rows
        assert lp.calls == [len(last), 8] and "row0" not in box
    else:
        assert lp.calls == [8 if everyone else 3 + 8] and box["row0"] is True


def test_one_masked_request_takes_its_block_as_a_slice():
    for counts, want in (([3], [4, 5, 6, 7]), ([0, 2, 0], [6, 7, 8])):
        last_rows = [4] if len(counts) == 1 else [1, 6, 12]
        box = prefill_masks.block_rows(last_rows, counts)
        assert isinstance(box["rows"], slice) and box["K"] == len(want)
        assert torch.arange(20)[box["rows"]].tolist() == want


@pytest.mark.parametrize("everyone", [True, False])
def test_a_slice_of_block_rows_rides_the_processors_lm_head_call(everyone, monkeypatch):
    LogitsMetadata = pytest.importorskip("sglang.srt.layers.logits_processor").LogitsMetadata
    monkeypatch.setattr(LogitsMetadata, "from_forward_batch", staticmethod(lambda meta: meta))
    hook, lp, weight, hidden = _installed(False)
    box = prefill_masks.block_rows([1, 6] if not everyone else [6], [0, 4] if not everyone else [4])  # rows 6-10
    last = [1, 10] if not everyone else [10]
    hook.begin(box)
    out = lp.forward(None, hidden, None, {"last_rows": torch.tensor(last)})
    hook.end()
    torch.testing.assert_close(box["logits"], hidden[6:11] @ weight.T)
    want = hidden[[1, 6] if not everyone else [6]] @ weight.T
    want[:, 3] = float("-inf")
    torch.testing.assert_close(out.next_token_logits, want)
    assert lp.calls == [5 if everyone else 2 + 5] and box["row0"] is True


def test_prefill_logits_without_masks_and_outside_prefills():
    hook, lp, weight, hidden = _installed()
    meta = {"last_rows": torch.tensor([4, 11])}
    hook.begin()  # a prefill whose masks did not ride it: its last rows, <MTP> at -inf
    out = lp.forward(None, hidden, None, meta)
    hook.end()
    want = hidden[[4, 11]] @ weight.T
    want[:, 3] = float("-inf")
    torch.testing.assert_close(out.next_token_logits, want)
    out = lp.forward(None, hidden, None, meta)  # decode steps and everything else: untouched
    torch.testing.assert_close(out.next_token_logits, hidden[[4, 11]] @ weight.T)
    assert lp.calls == [2, 2]
