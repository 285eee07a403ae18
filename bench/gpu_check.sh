#!/usr/bin/env bash
# One-call GPU check (no network needed): rebuild the extension with CUDA, smoke-test the
# CUDA ops (incl. CUDA-graph capture of the whole decode step), run the op tests and the kernel
# benchmark.
# Every step runs even if an earlier one failed; exit codes are recorded in the summary.
# Output: $OUT/gpu_check_<stamp>.log if OUT is set, else bench/results/gpu_check_<stamp>.log
# The benchmark writes its markdown/JSON into the same folder.
# Env overrides: PYTHON, CUDA_HOME, TORCH_CUDA_ARCH_LIST, MAX_JOBS, TOTAL_S (the whole run's
#                deadline, default 540 s: a lent machine runs one command for at most 600 s),
#                BUILD_TIMEOUT, TEST_TIMEOUT, BENCH_TIMEOUT, STEP_COST_TIMEOUT, STEP_COST_BUDGET,
#                ENGINE_TIMEOUT (seconds; each is also capped by the time left to TOTAL_S).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
RESULTS_DIR="${OUT:-$REPO/bench/results}"
mkdir -p "$RESULTS_DIR" "$REPO/bench/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOG="$RESULTS_DIR/gpu_check_${STAMP}.log"
exec > >(tee -a "$LOG") 2>&1
set -x

END=$((SECONDS + ${TOTAL_S:-540}))
# limit DEFAULT: a step's timeout, never past the run's deadline (at least 10 s)
limit() { local left=$((END - SECONDS)); [ "$left" -lt 10 ] && left=10; echo $(( $1 < left ? $1 : left )); }
PY="${PYTHON:-$(command -v python3 || command -v python)}"
"$PY" -c 'import torch' || { echo "FATAL: $PY cannot import torch (set PYTHON=...)"; exit 2; }
export PYTHONUNBUFFERED=1  # a step killed at its timeout still leaves what it printed in the log
# The same validated toolkit search as setup.py (an nvcc on PATH may be a wrapper script).
CUDA_HOME=$("$PY" -c 'import importlib.util as u; s = u.spec_from_file_location("t", "sglang_mtp/cuda_toolkit.py"); m = u.module_from_spec(s); s.loader.exec_module(m); print(m.find()[0] or "/usr/local/cuda")')
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
export SGLANG_MTP_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# Build only for the GPU that is here (faster than the full arch list).
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null || echo "8.0;9.0")
  export TORCH_CUDA_ARCH_LIST
fi
declare -A RC

# --- environment ---------------------------------------------------------------------------
date -u; uname -a; nvidia-smi || true; "$CUDA_HOME/bin/nvcc" --version || true
"$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'

# --- build ---------------------------------------------------------------------------------
t0=$(date +%s)
# In place, found through PYTHONPATH: no pip. An editable pip install can need the network
# there is none of: with pip 23 and setuptools >= 80, `setup.py develop` re-runs pip with
# build isolation and the package indexes (seen under Python 3.12 / torch 2.11, the GPU
# machines' stack).
timeout "$(limit "${BUILD_TIMEOUT:-300}")" "$PY" setup.py build_ext --inplace
RC[build_inplace]=$?
echo "build seconds: $(( $(date +%s) - t0 ))"
"$PY" -c 'import torch, sglang_mtp.ops
for op in sglang_mtp.ops.OPS:
    d = torch._C._dispatch_dump("sglang_mtp::" + op)
    print(d)
    assert "CUDA" in d, op + " has no CUDA kernel registered"'
RC[cuda_registered]=$?

# --- smoke: CUDA vs the plain-torch reference, then CUDA-graph capture + graph timing ------
timeout "$(limit 120)" "$PY" - <<'PYEOF'
import torch, sglang_mtp.ops as ops
from sglang_mtp.ops.reference import confidence_scan_ref
torch.manual_seed(0)
dev = "cuda"
bad = 0
for R, V, B, k in [(16, 151936, 1, 16), (19, 111, 19, 1), (99, 500, 33, 3), (64, 32000, 4, 16)]:
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        x = (torch.randn(R, V) * 4).to(dt)
        x[0, 7] = x[0, 3] = x[0].max() + 1           # tie -> lowest index
        if R > 2: x[1, 5] = float("nan"); x[2] = float("-inf")
        start = torch.arange(B, dtype=torch.int32) * k
        blen = torch.full((B,), k, dtype=torch.int32)
        thr = torch.rand(B) * 0.5
        stop = torch.tensor([3, 42], dtype=torch.int64)
        ref = confidence_scan_ref(x, start, blen, thr, stop, 5)
        got = ops.confidence_scan(x.to(dev), start.to(dev), blen.to(dev), thr.to(dev), stop.to(dev), 5)
        ok = (torch.equal(ref[0], got[0].cpu()) and torch.equal(ref[2], got[2].cpu())
              and torch.allclose(ref[1], got[1].cpu(), rtol=1e-3, atol=1e-5))
        bad += not ok
        print(f"confidence_scan R={R} V={V} {dt}: {'OK' if ok else 'MISMATCH'}")
# CUDA-graph capture (no host sync allowed inside), then time graph replays: per-call
# GPU time without the Python/dispatcher overhead that an event pair around one call sees.
def graph_time(R, V, dt, calls):
    x = torch.randn(R, V, device=dev).to(dt)
    k = min(R, 16)
    start = torch.arange(0, R, k, dtype=torch.int32, device=dev)
    blen = torch.full_like(start, k); thr = torch.full((start.numel(),), 0.5, device=dev)
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): ops.confidence_scan(x, start, blen, thr, None, -1)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls): out = ops.confidence_scan(x, start, blen, thr, None, -1)
    x.copy_(torch.randn(R, V, device=dev).to(dt))  # the replay must see the new logits
    g.replay(); torch.cuda.synchronize()
    ref = confidence_scan_ref(x.cpu(), start.cpu(), blen.cpu(), thr.cpu(), None, -1)
    ok = torch.equal(out[0].cpu(), ref[0]) and torch.equal(out[2].cpu(), ref[2])
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(15):
        e0.record(); g.replay(); e1.record(); torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) / calls * 1e-3)
    t = sorted(times)[len(times) // 2]
    return ok, t, x.numel() * x.element_size() / t / 1e9
src = torch.empty(1 << 26, device=dev); dst = torch.empty_like(src)
for _ in range(3): dst.copy_(src)
e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
e0.record()
for _ in range(20): dst.copy_(src)
e1.record(); torch.cuda.synchronize()
copy_gbps = 2 * src.numel() * 4 * 20 / (e0.elapsed_time(e1) * 1e-3) / 1e9
print(f"device-to-device copy bandwidth (read + write): {copy_gbps:.0f} GB/s")
for R, V, dt, calls in [(16, 151936, torch.float32, 100), (16, 151936, torch.bfloat16, 100),
                        (16, 32000, torch.float32, 100), (512, 151936, torch.float32, 10),
                        (512, 151936, torch.bfloat16, 10), (1024, 151936, torch.bfloat16, 10)]:
    ok, t, gbps = graph_time(R, V, dt, calls)
    bad += not ok
    print(f"graph-replayed confidence_scan R={R} V={V} {dt}: {'OK' if ok else 'MISMATCH'}  "
          f"{t * 1e6:.2f} us/call  {gbps:.0f} GB/s  {100 * gbps / copy_gbps:.0f}% of copy")
raise SystemExit(1 if bad else 0)
PYEOF
RC[smoke]=$?

# --- the fused decode step: eager under sync-debug "error", one CUDA graph, CPU reference ---
timeout "$(limit 200)" "$PY" bench/gpu_step_check.py
RC[step]=$?

# --- the plugin in a real Engine (graphs per width, FlashInfer plan); SKIP without SGLang ---
# (checked once here, so a machine without SGLang spends no time or returned files on it)
if "$PY" -c 'import sglang' 2>/dev/null; then
  ENGINE_LOG="$RESULTS_DIR/gpu_engine_check_${STAMP}.log"
  timeout "$(limit "${ENGINE_TIMEOUT:-400}")" "$PY" bench/gpu_engine_check.py > "$ENGINE_LOG" 2>&1
  RC[engine]=$?
  grep -E "^(SKIP|OK|FAILED|level )|MTP graphs|MTP graph memory|MTP worker" "$ENGINE_LOG"
  grep -q "MTP graphs decode width 1" "$ENGINE_LOG" || { echo "no DECODE graph set was built"; RC[engine_graphs]=1; }
  # Triton runs every step at the full width; on an MTP server it allocates no verify mask
  TRITON_LOG="$RESULTS_DIR/gpu_engine_check_triton_${STAMP}.log"
  timeout "$(limit "${ENGINE_TIMEOUT:-400}")" "$PY" bench/gpu_engine_check.py --attention-backend triton > "$TRITON_LOG" 2>&1
  RC[engine_triton]=$?
  grep -E "^(SKIP|OK|FAILED|level )|MTP: no Triton verify mask|MTP worker" "$TRITON_LOG"
  grep -q "MTP: no Triton verify mask" "$TRITON_LOG" || { echo "Triton allocated its verify mask"; RC[triton_mask]=1; }
else
  echo "SKIP: SGLang is not importable here: no Engine checks (graph sets per width, FlashInfer plan, Triton mask)"
fi

# --- tests ---------------------------------------------------------------------------------
# one file that fails to import (say, a transformers version) must not stop the others
timeout "$(limit "${TEST_TIMEOUT:-200}")" "$PY" -m pytest -q -rA --continue-on-collection-errors tests/test_confidence_scan.py tests/test_mtp_step.py tests/test_sampling.py
RC[pytest]=$?

# --- benchmark -----------------------------------------------------------------------------
timeout "$(limit "${BENCH_TIMEOUT:-200}")" "$PY" bench/bench_kernels.py --device cuda --out "$RESULTS_DIR"
RC[bench]=$?

# --- step cost: forward width 1 vs 2k-1 on real model shapes (random weights, PyTorch only) --
timeout "$(limit "${STEP_COST_TIMEOUT:-300}")" "$PY" bench/step_cost.py --out "$RESULTS_DIR" --budget-s "${STEP_COST_BUDGET:-150}"
RC[step_cost]=$?

set +x
echo "=== gpu_check summary ($(date -u)) ==="
status=0
for step in "${!RC[@]}"; do
  echo "$step: exit ${RC[$step]}"
  [ "${RC[$step]}" -ne 0 ] && status=1
done
echo "log: $LOG"
exit $status
