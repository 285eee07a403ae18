"""Cached pipeline stages (used by ``sglang-mtp toy`` and ``sglang-mtp smollm2``).

Each stage writes into its own directory and leaves a stamp file with the key of its
settings (a stage's key covers every stage upstream of it), so a rerun reuses what is
unchanged and a changed setting recomputes only what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time


def stage_key(*parts) -> str:
    """A short stable hash of JSON-able ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(path, key, stamp="stage.json"):
    """The stamp of the stage in ``path`` if it was built with ``key``, else None."""
    file = os.path.join(path, stamp)
    if not os.path.isfile(file):
        return None
    with open(file) as f:
        info = json.load(f)
    return info if info.get("key") == key else None


def write_stamp(path, key, seconds, stamp="stage.json", **extra):
    """Mark the stage in ``path`` as built with ``key`` (``extra``: its JSON-able results)."""
    with open(os.path.join(path, stamp), "w") as f:
        json.dump({"key": key, "seconds": round(seconds, 1), **extra}, f, indent=1)


def run_stages(stages, keys, paths, builders, *, force=(), until=None, log=print,
               tag="pipeline", stamp="stage.json") -> dict:
    """Run (or reuse) ``stages`` in order up to ``until``; ``builders[s](path) -> dict``.

    Returns ``{"paths", "seconds", "cached", <stage>: stamp}``.
    """
    log = log or (lambda *_: None)
    until = until or stages[-1]
    report = {"paths": paths, "seconds": {}, "cached": {}}
    for stage in stages[:stages.index(until) + 1]:
        info = None if stage in force or "all" in force else cached(paths[stage], keys[stage], stamp)
        report["cached"][stage] = info is not None
        if info is None:
            if os.path.isdir(paths[stage]):
                shutil.rmtree(paths[stage])
            os.makedirs(paths[stage], exist_ok=True)
            t0 = time.time()
            extra = builders[stage](paths[stage])
            write_stamp(paths[stage], keys[stage], time.time() - t0, stamp, **extra)
            info = cached(paths[stage], keys[stage], stamp)
            log(f"[{tag}] stage {stage} done in {info['seconds']:.0f}s -> {paths[stage]}")
        else:
            log(f"[{tag}] stage {stage}: cached ({paths[stage]})")
        report["seconds"][stage] = info["seconds"]
        report[stage] = info
    return report


def run_from_args(args, stages, run_pipeline, cfg) -> dict:
    """The shared body of a pipeline command: ``--force``, ``--threads``, ``--cache-dir``,
    ``--until``, ``--no-progress``; the stage log goes to stderr. Returns the report
    (``report["t0"]``: the start time)."""
    force = parse_force(args.force, stages)
    cpu_threads(args.threads)
    t0 = time.time()
    report = run_pipeline(cfg, args.cache_dir, force, args.until, progress=not args.no_progress,
                          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return {**report, "t0": t0}


def parse_force(text: str, stages) -> set:
    """The stage names of a ``--force a,b`` option (or ``all``); ValueError on unknown ones."""
    force = {s.strip() for s in text.split(",") if s.strip()}
    unknown = force - set(stages) - {"all"}
    if unknown:
        raise ValueError(f"--force: unknown stage(s) {sorted(unknown)}; stages are {tuple(stages)}")
    return force


def cpu_threads(threads: int):
    """Set torch's CPU threads (``--threads``) and silence per-checkpoint progress bars."""
    import torch
    from transformers.utils import logging as hf_logging

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # per-checkpoint load/save bars drown the stage log


def timing_line(report) -> str:
    """``stages: a 12s, b cached; this run 13s`` for a :func:`run_from_args` report."""
    timing = ", ".join(f"{s} {'cached' if report['cached'][s] else f'{t:.0f}s'}"
                       for s, t in report["seconds"].items())
    return f"stages: {timing}; this run {time.time() - report['t0']:.0f}s"
