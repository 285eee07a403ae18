// Row reduction used by confidence_scan.cu: the online (max, argmax, sum of exp,
// +inf count) state, its merge, warp/block reductions, the final token and
// confidence of a row, and the loads. Kept apart so the kernel file stays short.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

namespace sglang_mtp {
namespace confidence_scan_detail {

// Reduction state of (part of) a row. +inf entries are counted apart so that the
// finite sum never sees inf - inf; NaN, -inf and the suppressed id contribute
// nothing.
struct RowState {
  float m;      // max over finite values (-inf when none)
  float s;      // sum of exp(x - m) over finite values
  int idx;      // lowest index attaining m (INT_MAX when none)
  int ninf;     // number of +inf entries
  int idx_inf;  // lowest +inf index (INT_MAX when none)
};

__device__ __forceinline__ RowState empty_state() {
  return RowState{-INFINITY, 0.f, INT_MAX, 0, INT_MAX};
}

// Folds N consecutive values (indices base .. base+N-1) into st. Each thread
// feeds its values in increasing index order, so a tie with st.m keeps st.idx.
template <int N>
__device__ __forceinline__ void push(RowState& st, float (&x)[N], int base, int suppress) {
  float vmax = -INFINITY;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    if (base + j == suppress) x[j] = -INFINITY;
    if (!(x[j] < INFINITY)) {  // NaN or +inf
      if (x[j] == INFINITY) {
        st.ninf += 1;
        st.idx_inf = min(st.idx_inf, base + j);
      }
      x[j] = -INFINITY;
    }
    vmax = fmaxf(vmax, x[j]);
  }
  if (vmax == -INFINITY) return;
  int vj = 0;
#pragma unroll
  for (int j = N - 1; j >= 0; --j) vj = (x[j] == vmax) ? j : vj;
  if (vmax > st.m) {  // st.m == -inf gives exp(-inf) = 0, and st.s is 0 then
    st.s *= __expf(st.m - vmax);
    st.m = vmax;
    st.idx = base + vj;
  }
#pragma unroll
  for (int j = 0; j < N; ++j) st.s += __expf(x[j] - st.m);  // -inf entries add 0
}

// Order-independent merge: the lowest index wins ties explicitly.
__device__ __forceinline__ void merge(RowState& a, const RowState& b) {
  const float m = fmaxf(a.m, b.m);
  const float sa = (a.m == -INFINITY) ? 0.f : a.s * __expf(a.m - m);
  const float sb = (b.m == -INFINITY) ? 0.f : b.s * __expf(b.m - m);
  const bool take_b = b.m > a.m || (b.m == a.m && b.idx < a.idx);
  a.idx = take_b ? b.idx : a.idx;
  a.m = m;
  a.s = sa + sb;
  a.ninf += b.ninf;
  a.idx_inf = min(a.idx_inf, b.idx_inf);
}

__device__ __forceinline__ RowState warp_reduce(RowState st) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) {
    RowState o;
    o.m = __shfl_down_sync(0xffffffffu, st.m, d);
    o.s = __shfl_down_sync(0xffffffffu, st.s, d);
    o.idx = __shfl_down_sync(0xffffffffu, st.idx, d);
    o.ninf = __shfl_down_sync(0xffffffffu, st.ninf, d);
    o.idx_inf = __shfl_down_sync(0xffffffffu, st.idx_inf, d);
    merge(st, o);
  }
  return st;
}

// Result valid in thread 0 only. Called once per CTA (shared slots not reused).
__device__ __forceinline__ RowState block_reduce(RowState st) {
  __shared__ RowState warp_states[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  st = warp_reduce(st);
  if (lane == 0) warp_states[warp] = st;
  __syncthreads();
  if (warp == 0) {
    st = (lane < (int)(blockDim.x >> 5)) ? warp_states[lane] : empty_state();
    st = warp_reduce(st);
  }
  return st;
}

// +inf rows: the first +inf wins with 1/count. All -inf/NaN rows: the lowest
// non-suppressed index with confidence 0. Otherwise 1/sum, clamped against
// rounding so the confidence never leaves [0, 1].
__device__ __forceinline__ void write_result(const RowState& st, int V, int suppress,
                                             int64_t* token, float* confidence) {
  if (st.ninf > 0) {
    *token = st.idx_inf;
    *confidence = 1.f / (float)st.ninf;
  } else if (st.m == -INFINITY) {
    *token = (suppress == 0 && V > 1) ? 1 : 0;
    *confidence = 0.f;
  } else {
    *token = st.idx;
    *confidence = fminf(1.f, 1.f / st.s);
  }
}

template <typename T>
__device__ __forceinline__ void load_vec(const T* p, float (&x)[16 / sizeof(T)]) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < (int)(16 / sizeof(T)); ++j) x[j] = static_cast<float>(v[j]);
}

template <typename T>
__device__ __forceinline__ void push_scalar(RowState& st, const T* p, int i, int suppress) {
  float x[1] = {static_cast<float>(p[i])};
  push(st, x, i, suppress);
}

}  // namespace confidence_scan_detail
}  // namespace sglang_mtp
