"""Rank-consistent acceptance (sglang_plugin.rank_sync): two real gloo ranks on the CPU whose
decisions differ end with rank 0's decisions, in place, dtypes and shapes kept."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sglang_mtp.sglang_plugin.rank_sync import sync_from_rank0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        tokens = torch.arange(12, dtype=torch.int64).view(3, 4) + 100 * rank
        accept = torch.tensor([1, 2, 3], dtype=torch.int32) + rank
        flags = torch.tensor([True, False]) ^ bool(rank)
        sync_from_rank0([tokens, None, accept, flags], lambda t: dist.broadcast(t, src=0))
        out[rank] = (tokens.tolist(), accept.tolist(), accept.dtype == torch.int32, flags.tolist())
    finally:
        dist.destroy_process_group()


def test_every_rank_ends_with_rank_zero_decisions():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(_free_port(), out), nprocs=2, join=True)
        got = dict(out)
    want = ([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], [1, 2, 3], True, [True, False])
    assert got[0] == want and got[1] == want


def test_single_rank_and_bad_dtypes():
    t = torch.tensor([5, 6])
    sync_from_rank0([t], None)  # one rank: nothing to do
    assert t.tolist() == [5, 6]
    with pytest.raises(TypeError, match="integer decisions"):
        sync_from_rank0([torch.zeros(2)], lambda x: None)
