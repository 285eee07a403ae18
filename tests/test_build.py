"""The build: CUDA kernels whenever a valid toolkit is present, CPU fallback when it breaks."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sglang_mtp import cuda_toolkit, ops

REPO = Path(__file__).resolve().parents[1]


def test_cuda_kernels_built_when_toolkit_present():
    # CI has nvcc and a CUDA build of torch but no GPU: the CUDA kernels must compile and
    # register (a silent CPU fallback on a machine with a valid toolkit would be a bug).
    root, rejected = cuda_toolkit.find()
    if root is None or torch.version.cuda is None or os.environ.get("SGLANG_MTP_CUDA") == "0":
        pytest.skip(f"no valid CUDA toolkit ({rejected}) or CPU-only torch, or SGLANG_MTP_CUDA=0")
    assert ops.has_cuda_kernels()


def _fake_broken_toolkit(root: Path) -> Path:
    """A toolkit that passes detection but whose nvcc fails on every call."""
    for d in ("bin", "include", "lib64"):
        (root / d).mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text('#!/bin/sh\necho "nvcc: broken on purpose" >&2\nexit 1\n')
    nvcc.chmod(0o755)
    (root / "include" / "cuda_runtime.h").touch()
    (root / "lib64" / "libcudart.so").touch()
    return root


def _copy_sources(dst: Path) -> Path:
    shutil.copy(REPO / "setup.py", dst / "setup.py")
    shutil.copytree(REPO / "csrc", dst / "csrc")
    shutil.copytree(REPO / "sglang_mtp", dst / "sglang_mtp",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return dst


def _build(src: Path, toolkit: Path, mode: str):
    env = {**os.environ, "CUDA_HOME": str(toolkit), "SGLANG_MTP_CUDA": mode, "MAX_JOBS": "2"}
    return subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=src, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch never attempts the CUDA build")
def test_failed_cuda_build_falls_back_to_cpu_kernels_in_auto_mode(tmp_path):
    toolkit = _fake_broken_toolkit(tmp_path / "cuda")
    (tmp_path / "src").mkdir()
    src = _copy_sources(tmp_path / "src")

    forced = _build(src, toolkit, "1")
    assert forced.returncode != 0  # SGLANG_MTP_CUDA=1 keeps the failure
    assert not list((src / "sglang_mtp").glob("_C*.so"))

    auto = _build(src, toolkit, "auto")
    assert auto.returncode == 0, auto.stdout[-3000:] + auto.stderr[-3000:]
    assert "WARNING: building the CPU kernels only" in auto.stderr
    assert "Why: the CUDA build failed" in auto.stderr and "SGLANG_MTP_CUDA=1" in auto.stderr
    # The fallback library loads, registers every op on the CPU and has no CUDA kernels.
    check = ("import torch; from sglang_mtp import ops; "
             "t, c, a = ops.confidence_scan(torch.tensor([[0., 2., 1.]]), torch.tensor([0], dtype=torch.int32), "
             "torch.tensor([1], dtype=torch.int32), torch.tensor([0.5])); "
             "print(ops.has_cuda_kernels(), t.tolist(), a.tolist())")
    out = subprocess.run([sys.executable, "-c", check], cwd=src, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "[1]", "[1]"]
