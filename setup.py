"""Build of sglang-mtp: the Python package plus the `sglang_mtp._C` operator library.

The CPU kernels are always built. The CUDA kernels are added when nvcc and a CUDA build of
torch are present; SGLANG_MTP_CUDA=1 demands them (the build fails without a toolkit),
SGLANG_MTP_CUDA=0 skips them. TORCH_CUDA_ARCH_LIST picks the GPU targets (default 8.0;9.0).
Build with `pip install --no-build-isolation -e .` so the extension links against the torch
that is installed.
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cuda_home():
    """The CUDA toolkit root, preferring the nvcc on PATH (torch's default guess is /usr/local)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def want_cuda():
    import torch

    flag = os.environ.get("SGLANG_MTP_CUDA", "auto").lower()
    available = cuda_home() is not None and torch.version.cuda is not None
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        if not available:
            sys.exit("SGLANG_MTP_CUDA=1 but no nvcc / CUDA build of torch was found (set CUDA_HOME)")
        return True
    if flag != "auto":
        sys.exit(f"SGLANG_MTP_CUDA must be 0, 1 or auto, got {flag!r}")
    return available


def nvidia_wheel_includes():
    # torch's CUDA wheels ship headers (cuBLAS, cuSPARSE, ...) the system toolkit may lack.
    import torch

    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))


def extension():
    cpu_sources = sorted(glob.glob("csrc/*.cpp"))
    cxx = ["-O3", "-Wno-psabi"]
    if not want_cuda():
        return cpp_extension.CppExtension("sglang_mtp._C", cpu_sources, extra_compile_args={"cxx": cxx})
    os.environ["CUDA_HOME"] = cuda_home()
    cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"]
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    return cpp_extension.CUDAExtension(
        "sglang_mtp._C",
        cpu_sources + sorted(glob.glob("csrc/cuda/*.cu")),
        include_dirs=[os.path.join(ROOT, "csrc")] + nvidia_wheel_includes(),
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
    )


setup(
    name="sglang-mtp",
    version="0.1.0",
    description="Multi-token prediction (self-distilled MTP) decoding for SGLang, with fused kernels",
    packages=find_packages(include=["sglang_mtp", "sglang_mtp.*"]),
    package_data={"sglang_mtp": ["data/*"]},
    python_requires=">=3.10",
    install_requires=["torch", "numpy", "transformers"],
    extras_require={"sglang": ["sglang==0.5.23"], "test": ["pytest"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    entry_points={
        "console_scripts": ["sglang-mtp = sglang_mtp.cli:main"],
        # SGLang runs this in each of its processes: it adds --decode-mode mtp (a no-op otherwise).
        "sglang.srt.plugins": ["mtp = sglang_mtp.sglang_plugin:register"],
    },
)
