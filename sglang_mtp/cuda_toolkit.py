"""Finding the CUDA toolkit root for the build (imported by ``setup.py`` by file path).

The first ``nvcc`` on PATH may be a wrapper script that execs the real compiler, and torch's
own guess (``realpath(which nvcc)/../..``) then names a directory without ``libcudart``: the
build fails at link time. So every candidate root is validated, and only a root that has
the compiler, the runtime header and the runtime library is accepted. Standard library only:
this module runs before the package (and possibly before torch) is importable.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from typing import Iterable, List, Optional, Tuple

CONVENTIONAL = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda", "/opt/nvidia/cuda", "/usr/lib/cuda")
_EXEC_PATH = re.compile(r"""(/[^\s'"]*?/bin/nvcc)\b""")


def problems(root: str) -> List[str]:
    """What a toolkit root lacks (empty when it is usable)."""
    missing = []
    if not os.access(os.path.join(root, "bin", "nvcc"), os.X_OK):
        missing.append("bin/nvcc")
    if not os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
        missing.append("include/cuda_runtime.h")
    libs = [p for d in ("lib64", "lib", os.path.join("targets", "*", "lib"))
            for p in glob.glob(os.path.join(root, d, "libcudart.so*"))]
    if not libs:
        missing.append("lib64/libcudart.so* (or lib/)")
    return missing


def _roots_of_nvcc(nvcc: str, depth: int = 0) -> List[str]:
    """Toolkit roots an nvcc executable points at, seeing through symlinks and wrapper scripts."""
    real = os.path.realpath(nvcc)
    roots = [os.path.dirname(os.path.dirname(real))]
    if depth < 3 and _is_script(real):
        with open(real, errors="replace") as f:
            for target in _EXEC_PATH.findall(f.read(65536)):
                if os.path.realpath(target) != real:
                    roots += _roots_of_nvcc(target, depth + 1)
    return roots


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def candidates(env: Optional[dict] = None, path: Optional[str] = None,
               conventional: Iterable[str] = CONVENTIONAL) -> List[Tuple[str, str]]:
    """(root, where it came from) in order of preference, duplicates removed."""
    env = os.environ if env is None else env
    found: List[Tuple[str, str]] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            found.append((env[var], f"${var}"))
    nvcc = shutil.which("nvcc", path=path if path is not None else env.get("PATH", ""))
    if nvcc:
        found += [(root, f"nvcc on PATH ({nvcc})") for root in _roots_of_nvcc(nvcc)]
    for pattern in conventional:
        for root in sorted(glob.glob(pattern), reverse=True):  # newest versioned toolkit first
            found.append((root, "conventional location"))
    seen, unique = set(), []
    for root, origin in found:
        key = os.path.realpath(root)
        if key not in seen:
            seen.add(key)
            unique.append((root, origin))
    return unique


def find(env: Optional[dict] = None, path: Optional[str] = None,
         conventional: Iterable[str] = CONVENTIONAL) -> Tuple[Optional[str], List[str]]:
    """The first valid toolkit root (or None) and a report line per rejected candidate."""
    rejected = []
    for root, origin in candidates(env, path, conventional):
        missing = problems(root)
        if not missing:
            return root, rejected
        rejected.append(f"{root} (from {origin}): missing {', '.join(missing)}")
    return None, rejected
