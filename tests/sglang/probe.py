"""Test-only SGLang plugin: records the scheduler's KV-pool accounting at idle.

Loaded through ``probe_dist/`` (a dist-info that the Engine runner puts on ``sys.path``),
only when ``SGLANG_MTP_TEST_PROBE`` names a file. SGLang's idle check computes
``available + evictable + protected + ... == total`` for the KV pool; this AFTER hook writes
the latest result there, so a test can assert the free count returned to its idle value.
It also counts the requests SGLang retracts under memory pressure (``<file>.retracted``).
"""

import json
import os


def register():
    path = os.environ.get("SGLANG_MTP_TEST_PROBE")
    if not path:
        return
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    def record(result, checker, *args, **kwargs):
        has_leak, messages = result
        tmp = f"{path}.{os.getpid()}.tmp"  # per process: every TP rank records its own pool
        with open(tmp, "w") as f:
            json.dump({"leak": bool(has_leak), "messages": [m for m in messages if m]}, f)
        os.replace(tmp, path)
        return result

    def count_retractions(result, batch, *args, **kwargs):
        retracted = result[0]
        done = int(open(path + ".retracted").read()) if os.path.exists(path + ".retracted") else 0
        with open(path + ".retracted", "w") as f:
            f.write(str(done + len(retracted)))
        return result

    HookRegistry.register(
        "sglang.srt.managers.scheduler_components.invariant_checker.SchedulerInvariantChecker._check_all_pools",
        record, HookType.AFTER)
    HookRegistry.register("sglang.srt.managers.schedule_batch.ScheduleBatch.retract_decode",
                          count_retractions, HookType.AFTER)
