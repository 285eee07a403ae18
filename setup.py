"""Build of sglang-mtp: the Python package plus the `sglang_mtp._C` operator library.

The CPU kernels are always built. The CUDA kernels are added when a CUDA build of torch and a
valid CUDA toolkit are present (found by `sglang_mtp/cuda_toolkit.py`: $CUDA_HOME, $CUDA_PATH,
the nvcc on PATH seen through symlinks and wrapper scripts, the usual install locations).
SGLANG_MTP_CUDA=auto (default): a missing toolkit or a failed CUDA compile/link falls back to
the CPU-only build with a loud warning. SGLANG_MTP_CUDA=1 demands the CUDA kernels (fails
hard), SGLANG_MTP_CUDA=0 skips them. TORCH_CUDA_ARCH_LIST picks the GPU targets (default
8.0;9.0). Build with `pip install --no-build-isolation -e .` so the extension links against
the torch that is installed.
"""

import glob
import importlib.util
import os
import sys

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_cuda_toolkit():
    # By file path: importing the package would need its compiled extension.
    spec = importlib.util.spec_from_file_location("_cuda_toolkit", os.path.join(ROOT, "sglang_mtp", "cuda_toolkit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MODE = os.environ.get("SGLANG_MTP_CUDA", "auto").lower()
if MODE not in ("auto", "0", "1", "false", "true", "no", "yes", "off", "on"):
    sys.exit(f"SGLANG_MTP_CUDA must be 0, 1 or auto, got {MODE!r}")
MODE = {"false": "0", "no": "0", "off": "0", "true": "1", "yes": "1", "on": "1"}.get(MODE, MODE)
HOW_TO_GET_CUDA = (
    "To build the CUDA kernels: install a CUDA toolkit (bin/nvcc, include/cuda_runtime.h and\n"
    "lib64/libcudart.so*), point CUDA_HOME at it if it is not in a standard place, and rebuild with\n"
    "SGLANG_MTP_CUDA=1 pip install --no-build-isolation -e .   (make build SGLANG_MTP_CUDA=1)"
)


def warn_cpu_only(reason):
    bar = "=" * 78
    print(f"\n{bar}\nsglang-mtp: WARNING: building the CPU kernels only (no CUDA kernels).\n"
          f"Why: {reason}\nThe package works on the CPU; on a GPU the MTP server refuses to start.\n"
          f"{HOW_TO_GET_CUDA}\n{bar}\n", file=sys.stderr, flush=True)


def cuda_root():
    """The validated toolkit root for the CUDA build, or None for a CPU-only build."""
    import torch

    if MODE == "0":
        return None
    root, rejected = _load_cuda_toolkit().find()
    reason = None
    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU-only build"
    elif root is None:
        reason = "no valid CUDA toolkit found" + "".join(f"\n  rejected: {r}" for r in rejected)
    if reason is None:
        print(f"sglang-mtp: CUDA toolkit {root} (torch CUDA {torch.version.cuda})", file=sys.stderr)
        return root
    if MODE == "1":
        sys.exit(f"SGLANG_MTP_CUDA=1 but {reason}")
    warn_cpu_only(reason)
    return None


def nvidia_wheel_includes():
    # torch's CUDA wheels ship headers (cuBLAS, cuSPARSE, ...) the system toolkit may lack.
    import torch

    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))


CPU_SOURCES = sorted(glob.glob("csrc/*.cpp"))
CXX_FLAGS = ["-O3", "-Wno-psabi"]


def extension():
    root = cuda_root()
    if root is None:
        return cpp_extension.CppExtension("sglang_mtp._C", CPU_SOURCES, extra_compile_args={"cxx": list(CXX_FLAGS)})
    os.environ["CUDA_HOME"] = root  # torch's build helpers read it; our process only
    cpp_extension.CUDA_HOME = root
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    ext = cpp_extension.CUDAExtension(
        "sglang_mtp._C",
        CPU_SOURCES + sorted(glob.glob("csrc/cuda/*.cu")),
        include_dirs=[os.path.join(ROOT, "csrc")] + nvidia_wheel_includes(),
        extra_compile_args={"cxx": list(CXX_FLAGS), "nvcc": nvcc},
    )
    ext.sglang_mtp_cuda = True
    return ext


class BuildExtension(cpp_extension.BuildExtension):
    """In auto mode a failed CUDA build (toolkit check, compiler or linker) falls back to the
    CPU kernels with a loud warning; SGLANG_MTP_CUDA=1 keeps the failure."""

    def build_extensions(self):
        saved = (self.compiler.compile, self.compiler._compile)  # torch wraps these per call
        try:
            super().build_extensions()
        except Exception as e:
            cuda = [ext for ext in self.extensions if getattr(ext, "sglang_mtp_cuda", False)]
            if MODE != "auto" or not cuda:
                raise
            warn_cpu_only(f"the CUDA build failed: {type(e).__name__}: {e}")
            for ext in cuda:
                _make_cpu_only(ext)
            self.compiler.compile, self.compiler._compile = saved
            super().build_extensions()


def _make_cpu_only(ext):
    ext.sglang_mtp_cuda = False
    ext.sources = list(CPU_SOURCES)
    ext.extra_compile_args = {"cxx": list(CXX_FLAGS)}  # torch's build adds its flags again
    ext.libraries = [lib for lib in ext.libraries if lib not in ("cudart", "c10_cuda", "torch_cuda")]
    root = os.path.realpath(cpp_extension.CUDA_HOME or "/nonexistent")
    ext.library_dirs = [d for d in ext.library_dirs if not os.path.realpath(d).startswith(root)]


setup(
    name="sglang-mtp",
    version="0.1.0",
    description="Multi-token prediction (self-distilled MTP) decoding for SGLang, with fused kernels",
    packages=find_packages(include=["sglang_mtp", "sglang_mtp.*"]),
    package_data={"sglang_mtp": ["data/*"]},
    python_requires=">=3.10",
    install_requires=["torch", "numpy", "transformers"],
    extras_require={"sglang": ["sglang==0.5.23"], "test": ["pytest", "hypothesis"], "gguf": ["gguf", "accelerate"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    entry_points={
        "console_scripts": ["sglang-mtp = sglang_mtp.cli:main"],
        # SGLang runs this in each of its processes: it adds --decode-mode mtp (a no-op otherwise).
        "sglang.srt.plugins": ["mtp = sglang_mtp.sglang_plugin:register"],
    },
)
