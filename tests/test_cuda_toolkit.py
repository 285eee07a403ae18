"""The build's CUDA toolkit detection, on fake directory trees (no real toolkit needed)."""

import os
import stat

from sglang_mtp import cuda_toolkit


def _toolkit(root, lib="lib64", runtime=True, header=True):
    """A fake toolkit: an executable bin/nvcc, the runtime header and library."""
    os.makedirs(os.path.join(root, "bin"))
    nvcc = os.path.join(root, "bin", "nvcc")
    with open(nvcc, "w") as f:
        f.write("#!/bin/sh\necho fake nvcc\n")
    os.chmod(nvcc, 0o755)
    if header:
        os.makedirs(os.path.join(root, "include"))
        open(os.path.join(root, "include", "cuda_runtime.h"), "w").close()
    if runtime:
        os.makedirs(os.path.join(root, lib))
        open(os.path.join(root, lib, "libcudart.so.13"), "w").close()
    return str(root)


def _wrapper(bindir, target):
    """A two-line wrapper script named nvcc that execs `target` (like /usr/local/bin/nvcc here)."""
    os.makedirs(bindir, exist_ok=True)
    path = os.path.join(bindir, "nvcc")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec {target} "$@"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def test_wrapper_script_on_path_resolves_to_the_real_toolkit(tmp_path):
    real = _toolkit(tmp_path / "cuda-13.0")
    _wrapper(tmp_path / "usr" / "bin", os.path.join(real, "bin", "nvcc"))
    root, rejected = cuda_toolkit.find(env={}, path=str(tmp_path / "usr" / "bin"), conventional=())
    assert root == real
    # the wrapper's own grandparent (no include/, no libcudart) was considered and rejected
    assert any(str(tmp_path / "usr") in r and "libcudart" in r for r in rejected)


def test_symlinked_nvcc_resolves_through_the_link(tmp_path):
    real = _toolkit(tmp_path / "toolkit", lib="lib")  # lib/ instead of lib64/ is accepted too
    os.makedirs(tmp_path / "links")
    os.symlink(os.path.join(real, "bin", "nvcc"), tmp_path / "links" / "nvcc")
    root, _ = cuda_toolkit.find(env={}, path=str(tmp_path / "links"), conventional=())
    assert os.path.realpath(root) == os.path.realpath(real)


def test_env_var_wins_when_valid_and_is_rejected_with_reasons_when_not(tmp_path):
    env_root = _toolkit(tmp_path / "from_env")
    other = _toolkit(tmp_path / "other")
    root, _ = cuda_toolkit.find(env={"CUDA_HOME": env_root}, path="", conventional=(other,))
    assert root == env_root

    broken = _toolkit(tmp_path / "broken", runtime=False)
    root, rejected = cuda_toolkit.find(env={"CUDA_HOME": broken}, path="", conventional=(other,))
    assert root == other
    assert rejected == [f"{broken} (from $CUDA_HOME): missing lib64/libcudart.so* (or lib/)"]

    root, _ = cuda_toolkit.find(env={"CUDA_PATH": env_root}, path="", conventional=())
    assert root == env_root


def test_versioned_conventional_locations_newest_first(tmp_path):
    old = _toolkit(tmp_path / "cuda-12.4")
    new = _toolkit(tmp_path / "cuda-13.0")
    root, _ = cuda_toolkit.find(env={}, path="", conventional=(str(tmp_path / "cuda-*"),))
    assert root == new and old != new


def test_no_toolkit_gives_none_and_names_what_is_missing(tmp_path):
    headerless = _toolkit(tmp_path / "cuda", header=False, runtime=False)
    root, rejected = cuda_toolkit.find(env={}, path="", conventional=(headerless,))
    assert root is None
    assert rejected == [f"{headerless} (from conventional location): missing include/cuda_runtime.h, "
                        "lib64/libcudart.so* (or lib/)"]
    assert cuda_toolkit.find(env={}, path="", conventional=()) == (None, [])
