"""The run manifest: which machine, software, model, prompts and flags produced a result.

Everything is read-only: versions from package metadata, the GPU from ``nvidia-smi``, the
repository state from ``git rev-parse`` / ``git status`` (nothing in git is changed).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "sglang", "sglang-mtp", "transformers", "aiohttp", "flashinfer-python", "sglang-kernel")
MODEL_FIELDS = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "vocab_size",
                "torch_dtype", "dtype", "mtp_mask_token_id", "mtp_trained")


def _run(cmd: List[str], cwd=None) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict:
    """Installed versions of the packages that matter (None = not installed)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    try:
        import torch
        found["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    return found


def gpus() -> List[dict]:
    """Name, driver and memory of each NVIDIA GPU (empty without ``nvidia-smi``)."""
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    rows = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sha256_file(path) -> Optional[str]:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def model_info(model_path: str) -> dict:
    """The model's path, config hash and the config fields that identify it."""
    info = {"path": str(model_path)}
    config = Path(model_path) / "config.json"
    if config.is_file():
        info["config_sha256"] = sha256_file(config)
        try:
            cfg = json.loads(config.read_text())
            info.update({k: cfg[k] for k in MODEL_FIELDS if k in cfg})
        except ValueError:
            info["config_error"] = "config.json is not valid JSON"
    return info


def repo_state() -> dict:
    commit = _run(["git", "rev-parse", "HEAD"], cwd=REPO)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO)
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def hardware() -> dict:
    """A one-line description plus details of the machine."""
    g = gpus()
    cores = os.cpu_count()
    label = (f"{len(g)}x {g[0]['name']} (driver {g[0]['driver']})" if g
             else f"CPU only: {cpu_name()}, {cores} cores")
    return {"label": label, "gpus": g, "cpu": cpu_name(), "cpu_cores": cores,
            "platform": platform.platform(), "python": platform.python_version()}


def build_manifest(args: dict, model_path: str, prompts_info: dict) -> dict:
    """Everything needed to reproduce or judge a result, as a JSON-safe dict."""
    return {
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(),
        "versions": versions(),
        "repo": repo_state(),
        "model": model_info(model_path),
        "prompts": prompts_info,
        "args": args,
    }
