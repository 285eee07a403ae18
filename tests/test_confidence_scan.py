"""confidence_scan against its plain-torch reference, on every available device."""

import pytest
import torch

from sglang_mtp import ops
from sglang_mtp.ops.reference import confidence_scan_ref

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def make_blocks(block_lens, gap=0, device="cpu"):
    """Consecutive blocks with `gap` ignored rows before each; returns (start, len, R)."""
    starts, r = [], 0
    for n in block_lens:
        r += gap
        starts.append(r)
        r += n
    i32 = dict(dtype=torch.int32, device=device)
    return torch.tensor(starts, **i32), torch.tensor(block_lens, **i32), r


def safe_thresholds(conf, starts, lens, gen):
    """Thresholds halfway between neighbouring confidences of each block, so a last-bit
    difference between kernels can never flip an accept decision."""
    out = []
    for s, n in zip(starts.tolist(), lens.tolist()):
        vals = sorted(set([0.0, 1.0] + conf[s : s + n].tolist()))
        i = int(torch.randint(0, len(vals) - 1, (1,), generator=gen))
        out.append((vals[i] + vals[i + 1]) / 2)
    return torch.tensor(out, dtype=torch.float32)


def check_against_ref(logits, starts, lens, tau, stops=None, suppress=-1):
    tok, conf, acc = ops.confidence_scan(logits, starts, lens, tau, stops, suppress)
    rtok, rconf, racc = confidence_scan_ref(logits.cpu(), starts.cpu(), lens.cpu(), tau.cpu(),
                                            None if stops is None else stops.cpu(), suppress)
    assert tok.dtype == torch.int64 and conf.dtype == torch.float32 and acc.dtype == torch.int32
    assert torch.equal(tok.cpu(), rtok)
    torch.testing.assert_close(conf.cpu(), rconf, rtol=2e-5, atol=1e-7)
    assert torch.equal(acc.cpu(), racc)
    return tok, conf, acc


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,V", [(1, 111), (19, 500), (99, 111), (4, 32000), (2, 151936)])
def test_matches_reference(device, dtype, B, V):
    gen = torch.Generator().manual_seed(B * 1000 + V)
    lens = torch.randint(1, 9, (B,), generator=gen).tolist()
    starts, blen, R = make_blocks(lens, gap=1)
    logits = (torch.randn(R, V, generator=gen) * 4).to(dtype)
    _, rconf, _ = confidence_scan_ref(logits, starts, blen, torch.zeros(B))
    tau = safe_thresholds(rconf, starts, blen, gen)
    stops = torch.randint(0, V, (3,), generator=gen)
    check_against_ref(logits.to(device), starts.to(device), blen.to(device), tau.to(device), stops.to(device), 7)


def test_ties_lowest_index_wins(device):
    logits = torch.zeros(3, 300)
    logits[0, [5, 17, 299]] = 3.0
    logits[1] = 1.0  # every entry ties
    logits[2, [0, 256]] = 2.0
    s, n, _ = make_blocks([3])
    tok, conf, _ = check_against_ref(logits.to(device), s.to(device), n.to(device), torch.zeros(1, device=device))
    assert tok.tolist() == [5, 0, 0]
    assert conf[1].item() == pytest.approx(1 / 300, rel=1e-5)


@pytest.mark.parametrize("V", [111, 32000])
def test_confidence_is_softmax_probability(device, V):
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(V)) * 5
    s, n, _ = make_blocks([6])
    _, conf, _ = ops.confidence_scan(logits.to(device), s.to(device), n.to(device), torch.zeros(1, device=device))
    expected = torch.softmax(logits.double(), dim=1).max(dim=1).values.float()
    torch.testing.assert_close(conf.cpu(), expected, rtol=1e-5, atol=0)


def test_thresholds_zero_and_one(device):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(12, 200, generator=gen)
    logits[4:8, 9] = 60.0  # confidence rounds to 1.0 in float32
    s, n, _ = make_blocks([4, 4, 4])
    tau = torch.tensor([0.0, 1.0, 1.0], device=device)
    _, conf, acc = check_against_ref(logits.to(device), s.to(device), n.to(device), tau)
    assert acc.tolist() == [4, 4, 1]  # tau 0 takes the whole block; tau 1 needs p == 1; at least one
    assert conf[4:8].eq(1.0).all()


def test_block_len_one_and_leading_run(device):
    logits = torch.full((6, 50), -2.0)
    logits[0, 1] = 10.0  # confident
    logits[1, 2] = 10.0
    logits[2, 3] = 0.5  # unconfident: ends the run
    logits[3, 4] = 10.0  # confident again, but after the gap
    logits[4, 5] = 0.0  # block of one unconfident row
    s = torch.tensor([0, 4, 5], dtype=torch.int32)
    n = torch.tensor([4, 1, 1], dtype=torch.int32)
    tau = torch.full((3,), 0.9)
    _, _, acc = check_against_ref(logits.to(device), s.to(device), n.to(device), tau.to(device))
    assert acc.tolist() == [2, 1, 1]


@pytest.mark.parametrize("stop_row,expected", [(0, 1), (3, 4), (2, 3)])
def test_stop_token_cuts_accept(device, stop_row, expected):
    logits = torch.full((4, 64), -5.0)
    for r, t in enumerate([10, 11, 12, 13]):
        logits[r, t] = 5.0
    logits[stop_row] = -5.0
    logits[stop_row, 42] = 5.0
    s, n, _ = make_blocks([4])
    stops = torch.tensor([7, 42], device=device)
    _, _, acc = check_against_ref(logits.to(device), s.to(device), n.to(device), torch.zeros(1, device=device), stops)
    assert acc.tolist() == [expected]


def test_empty_stop_set_matches_none(device):
    logits = torch.randn(5, 77, generator=torch.Generator().manual_seed(5))
    s, n, _ = make_blocks([5])
    args = (logits.to(device), s.to(device), n.to(device), torch.zeros(1, device=device))
    a = ops.confidence_scan(*args, torch.empty(0, dtype=torch.int64, device=device))
    b = ops.confidence_scan(*args, None)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_suppressed_id_never_predicted(device, dtype):
    logits = torch.randn(4, 500, generator=torch.Generator().manual_seed(9)).to(dtype)
    logits[:, 321] = 50.0  # the mask id is the maximum of every row
    s, n, _ = make_blocks([4])
    tok, conf, _ = check_against_ref(logits.to(device), s.to(device), n.to(device),
                                     torch.zeros(1, device=device), None, 321)
    assert not (tok == 321).any()
    expected = torch.softmax(torch.cat([logits[:, :321], logits[:, 322:]], 1).double(), 1).max(1).values
    torch.testing.assert_close(conf.cpu(), expected.float(), rtol=1e-5, atol=0)


def test_nonfinite_rows(device):
    V = 130
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(1))
    logits[0, 40] = float("nan")  # NaN counts as -inf: the rest of the row decides
    logits[1, [7, 99]] = float("inf")  # two +inf: first wins, p = 1/2
    logits[2] = float("-inf")  # nothing finite: token 0, p = 0
    logits[3] = float("nan")
    logits[4, :] = float("-inf")
    logits[4, 0] = float("inf")  # +inf at the suppressed id only
    logits[5, 3] = float("inf")
    s, n, _ = make_blocks([6])
    tok, conf, _ = check_against_ref(logits.to(device), s.to(device), n.to(device),
                                     torch.zeros(1, device=device), None, 0)
    assert tok[1].item() == 7 and conf[1].item() == 0.5
    assert tok[2].item() == 1 and conf[2].item() == 0.0  # 0 is suppressed here
    assert tok[4].item() == 1 and conf[4].item() == 0.0
    assert tok[5].item() == 3 and conf[5].item() == 1.0
    assert ((tok >= 0) & (tok < V)).all() and ((conf >= 0) & (conf <= 1)).all()


def test_rows_outside_blocks_are_ignored(device):
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(9, 64, generator=gen)
    s = torch.tensor([6, 1], dtype=torch.int32)  # out of order, with gaps
    n = torch.tensor([3, 2], dtype=torch.int32)
    _, _, acc = check_against_ref(logits.to(device), s.to(device), n.to(device), torch.zeros(2, device=device))
    assert acc.tolist() == [3, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V", [151936, 262144])
def test_specials_across_row_splits(device, dtype, V):
    # Few rows and a large V: the CUDA scan splits every row over many CTAs, so ties, +inf,
    # NaN and all -inf rows must merge correctly across splits (lowest index wins).
    gen = torch.Generator().manual_seed(V)
    logits = (torch.randn(6, V, generator=gen) * 2).to(torch.float32)
    top = [3, V // 2 + 1, V - 1]                      # a three-way tie for the max, far apart
    logits[0, top] = 50.0
    logits[1, [V // 3, V - 2]] = float("inf")         # two +inf in different splits: the first wins
    logits[2, ::7] = float("nan")                     # NaN counts as -inf
    logits[2, V - 5] = 60.0
    logits[3] = float("-inf")                         # nothing above -inf: lowest unsuppressed id
    logits[4, :] = 1.0                                # a flat row: every id ties
    logits[5, [0, V - 1]] = 40.0                      # tie between the first and last id
    logits = logits.to(dtype)
    starts, lens, R = make_blocks([2, 1, 3])
    tok, conf, _ = check_against_ref(logits.to(device), starts.to(device), lens.to(device),
                                     torch.tensor([0.5, 0.0, 0.9], device=device), None, 0)
    assert tok.tolist() == [3, V // 3, V - 5, 1, 1, V - 1]  # id 0 is suppressed
    assert conf[1].item() == pytest.approx(0.5) and conf[3].item() == 0.0


@pytest.mark.parametrize("dtype,V", [(torch.float32, 32001), (torch.bfloat16, 151935), (torch.float16, 4099)])
def test_misaligned_rows(device, dtype, V):
    # A view one element into its storage: no row starts on a 16-byte boundary, so the
    # vectorised loads must handle the unaligned head of every row.
    gen = torch.Generator().manual_seed(V)
    R = 5
    base = (torch.randn(R * V + 1, generator=gen) * 3).to(dtype).to(device)
    logits = base[1:].view(R, V)
    assert logits.is_contiguous() and logits.storage_offset() == 1
    starts, lens, _ = make_blocks([2, 3])
    _, rconf, _ = confidence_scan_ref(logits.cpu(), starts, lens, torch.zeros(2))
    tau = safe_thresholds(rconf, starts, lens, gen)
    check_against_ref(logits, starts.to(device), lens.to(device), tau.to(device))


def test_many_blocks(device):
    # B = 2048 blocks: the accept step runs over more than one CUDA block.
    gen = torch.Generator().manual_seed(2048)
    lens = torch.randint(1, 4, (2048,), generator=gen).tolist()
    starts, blen, R = make_blocks(lens)
    logits = torch.randn(R, 500, generator=gen) * 4
    _, rconf, _ = confidence_scan_ref(logits, starts, blen, torch.zeros(2048))
    tau = safe_thresholds(rconf, starts, blen, gen)
    check_against_ref(logits.to(device), starts.to(device), blen.to(device), tau.to(device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(device, dtype):
    logits = torch.randn(10, 333, generator=torch.Generator().manual_seed(2)).to(dtype).to(device)
    s, n, _ = make_blocks([4, 6], device=device)
    args = (logits, s, n, torch.tensor([0.3, 0.0], device=device), torch.tensor([3], device=device), 5)
    torch.library.opcheck(torch.ops.sglang_mtp.confidence_scan, args)


def test_compiles_without_graph_breaks():
    logits = torch.randn(8, 100)
    s, n, _ = make_blocks([8])
    fn = torch.compile(lambda x: ops.confidence_scan(x, s, n, torch.zeros(1))[2] + 1, fullgraph=True)
    assert fn(logits).tolist() == [9]


BAD = [
    (lambda a: a.update(logits=a["logits"][None]), "logits must be 2-D"),
    (lambda a: a.update(logits=a["logits"].double()), "logits must be float32, bfloat16 or float16"),
    (lambda a: a.update(logits=a["logits"].t()), "logits must be contiguous"),
    (lambda a: a.update(block_start=a["block_start"].long()), "block_start must be Int"),
    (lambda a: a.update(block_len=a["block_len"][:1]), "block_len must have B = 2"),
    (lambda a: a.update(threshold=torch.tensor([0.5, 1.5])), "threshold[1] must be in [0, 1]"),
    (lambda a: a.update(threshold=torch.tensor([float("nan"), 0.5])), "threshold[0] must be in [0, 1]"),
    (lambda a: a.update(block_start=torch.tensor([0, 5], dtype=torch.int32)), "lies outside the 8 logits rows"),
    (lambda a: a.update(block_start=torch.tensor([-1, 4], dtype=torch.int32)), "lies outside"),
    (lambda a: a.update(block_start=torch.tensor([0, 2], dtype=torch.int32)), "blocks overlap"),
    (lambda a: a.update(block_len=torch.tensor([0, 4], dtype=torch.int32)), "block_len[0] must be >= 1"),
    (lambda a: a.update(stop_token_ids=torch.tensor([1], dtype=torch.int32)), "stop_token_ids must be Long"),
]


@pytest.mark.parametrize("mutate,message", BAD)
def test_bad_input_names_the_argument(mutate, message):
    args = dict(logits=torch.randn(8, 50), block_start=torch.tensor([0, 4], dtype=torch.int32),
                block_len=torch.tensor([4, 4], dtype=torch.int32), threshold=torch.tensor([0.5, 0.5]),
                stop_token_ids=None)
    mutate(args)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ops.confidence_scan(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_device_mismatch_is_named():
    with pytest.raises(ValueError, match="threshold.*cpu"):
        ops.confidence_scan(torch.randn(4, 10, device="cuda"), torch.zeros(1, dtype=torch.int32, device="cuda"),
                            torch.ones(1, dtype=torch.int32, device="cuda"), torch.zeros(1))
