// CUDA implementation of sglang_mtp::sample_scan (schema in csrc/ops.cpp; semantics in
// csrc/sample_scan.cpp and sglang_mtp/ops/reference.py).
//
// Three launches on the current stream, no host sync (safe under CUDA-graph capture):
//   1. confidence_scan (the greedy result of every row, through the dispatcher);
//   2. sample_rows_kernel, one CTA per row: rows with inv_temperature > 0 overwrite their
//      token and confidence with the Gumbel-max sample (two passes over the row: max of
//      z = logits * inv_temperature, then sum of exp and the best key among the entries
//      within noise::kWindow of the max, so most rows hash only a few ids);
//   3. accept_kernel: the accept length of every block (csrc/accept_rule.h).
// A non-finite or negative inv_temperature (rejected on the CPU) counts as greedy.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "../sample_rule.h"
#include "../scan_common.h"

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <optional>
#include <tuple>

namespace sglang_mtp {
namespace {

constexpr int kThreads = 256;
constexpr int kAcceptThreads = 256;

// The best (key, id, z) of a row: larger key wins, the lower id wins a tie.
struct Best {
  float key;
  int idx;
  float z;
};

__device__ __forceinline__ void take_best(Best& a, const Best& b) {
  if (b.key > a.key || (b.key == a.key && b.idx < a.idx)) a = b;
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  for (int d = 16; d > 0; d >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, d));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = shared[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) m = fmaxf(m, shared[w]);
    shared[32] = m;
  }
  __syncthreads();
  const float m = shared[32];
  __syncthreads();
  return m;
}

// Result valid in thread 0.
__device__ __forceinline__ void block_sum_best(float& s, Best& b, float* s_shared, Best* b_shared) {
  for (int d = 16; d > 0; d >>= 1) {
    s += __shfl_down_sync(0xffffffffu, s, d);
    Best o{__shfl_down_sync(0xffffffffu, b.key, d), __shfl_down_sync(0xffffffffu, b.idx, d),
           __shfl_down_sync(0xffffffffu, b.z, d)};
    take_best(b, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    s_shared[warp] = s;
    b_shared[warp] = b;
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) {
      s += s_shared[w];
      take_best(b, b_shared[w]);
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
sample_rows_kernel(const T* __restrict__ logits, int V, int suppress, const float* __restrict__ inv_temperature,
                   const int64_t* __restrict__ seed, const int64_t* __restrict__ position,
                   int64_t* __restrict__ tokens, float* __restrict__ confidence) {
  __shared__ float f_shared[33];
  __shared__ Best b_shared[32];
  const int row = blockIdx.x;
  const float it = inv_temperature[row];
  if (!(it > 0.f) || !(it < INFINITY)) return;  // greedy row: keep confidence_scan's result
  const T* p = logits + (int64_t)row * V;
  float m = -INFINITY;
  int posinf = 0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float z = static_cast<float>(p[i]) * it;
    if (i == suppress || isnan(z)) continue;
    if (z == INFINITY) posinf = 1;
    else m = fmaxf(m, z);
  }
  posinf = __syncthreads_or(posinf);
  m = block_max(m, f_shared);
  if (posinf || m == -INFINITY) return;  // the greedy rule decides such rows
  const uint64_t key = noise::row_key(seed[row], position[row]);
  float s = 0.f;
  Best b{-INFINITY, INT_MAX, 0.f};
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float z = static_cast<float>(p[i]) * it;
    if (i == suppress || isnan(z) || z == -INFINITY) continue;
    s += __expf(z - m);
    if (z < m - noise::kWindow) continue;
    const float g = -logf(-logf(noise::uniform(key, i)));
    take_best(b, Best{z + g, i, z});
  }
  block_sum_best(s, b, f_shared, b_shared);
  if (threadIdx.x == 0) {
    tokens[row] = b.idx;
    confidence[row] = fminf(1.f, __expf(b.z - m) / s);
  }
}

__global__ void accept_kernel(const int* __restrict__ block_start, const int* __restrict__ block_len,
                              const float* __restrict__ threshold, const int64_t* __restrict__ stops, int S, int B,
                              int R, const int64_t* __restrict__ tokens, const float* __restrict__ confidence,
                              int* __restrict__ accept_len) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < B; b += step)
    accept_len[b] = accept_length(tokens, confidence, block_start[b], block_len[b], threshold[b], stops, S, R);
}

ScanResult sample_scan_cuda(const at::Tensor& logits, const at::Tensor& block_start, const at::Tensor& block_len,
                            const at::Tensor& threshold, const std::optional<at::Tensor>& stop_token_ids,
                            int64_t suppress_token_id, const at::Tensor& inv_temperature, const at::Tensor& seed,
                            const at::Tensor& position) {
  check_sample_args(logits, inv_temperature, seed, position, "sample_scan");
  auto [tokens, confidence, accept] =
      greedy_scan(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id);
  const c10::cuda::CUDAGuard guard(logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logits.device().index());
  const int R = (int)logits.size(0), V = (int)logits.size(1), B = (int)block_start.size(0);
  const int sup = (suppress_token_id >= 0 && suppress_token_id < V) ? (int)suppress_token_id : -1;
  auto* tok = tokens.data_ptr<int64_t>();
  auto* conf = confidence.data_ptr<float>();
  const float* it = inv_temperature.data_ptr<float>();
  const int64_t* sd = seed.data_ptr<int64_t>();
  const int64_t* ps = position.data_ptr<int64_t>();
  if (R > 0) {
    switch (logits.scalar_type()) {
      case at::kFloat:
        sample_rows_kernel<<<R, kThreads, 0, stream>>>(logits.data_ptr<float>(), V, sup, it, sd, ps, tok, conf);
        break;
      case at::kHalf:
        sample_rows_kernel<<<R, kThreads, 0, stream>>>(logits.data_ptr<at::Half>(), V, sup, it, sd, ps, tok, conf);
        break;
      default:
        sample_rows_kernel<<<R, kThreads, 0, stream>>>(logits.data_ptr<at::BFloat16>(), V, sup, it, sd, ps, tok,
                                                       conf);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (B > 0) {
    const bool has_stop = stop_token_ids.has_value() && stop_token_ids->numel() > 0;
    accept_kernel<<<(B + kAcceptThreads - 1) / kAcceptThreads, kAcceptThreads, 0, stream>>>(
        block_start.data_ptr<int>(), block_len.data_ptr<int>(), threshold.data_ptr<float>(),
        has_stop ? stop_token_ids->data_ptr<int64_t>() : nullptr, has_stop ? (int)stop_token_ids->numel() : 0, B, R,
        tok, conf, accept.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {tokens, confidence, accept};
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CUDA, m) { m.impl("sample_scan", &sample_scan_cuda); }

}  // namespace sglang_mtp
