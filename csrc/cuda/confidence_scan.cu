// CUDA implementation of sglang_mtp::confidence_scan (schema in csrc/ops.cpp).
//
// Two launches, both safe under CUDA-graph capture (no host sync; the only
// allocations are at::empty calls on the current stream):
//   1. scan_rows_kernel, grid (R, splits): every CTA reduces one slice of one
//      row to a RowState (max, argmax, sum of exp, +inf count) in ONE pass over
//      the logits. With splits == 1 it writes tokens/confidence directly,
//      otherwise a partial state per (row, split).
//   2. finalize_accept_kernel: merges the partials of every row (only when
//      splits > 1, and then the grid is a single CTA) and computes accept_len.
// Decode batches have few rows (R = B*k) and a large V: one CTA per row would
// leave most SMs idle, hence the row split.
//
// Defined results for inputs the CPU op rejects (the CUDA op must not host-sync
// to check values): a block outside [0, R) or with block_len <= 0 gets
// accept_len 0 and no row of it is read; overlapping blocks are each scanned as
// given; a threshold outside [0, 1] is compared as is (NaN accepts 1 row).
// Numerics: fp32 accumulation, __expf (a few ulp), confidence clamped to [0, 1].

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../accept_rule.h"
#include "../checks.h"
#include "confidence_scan_reduce.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <optional>
#include <tuple>

namespace sglang_mtp {
namespace {

using namespace confidence_scan_detail;

constexpr int kScanThreads = 256;
constexpr int kFinalizeThreads = 1024;
constexpr int kUnroll = 4;        // 16-byte loads in flight per thread
constexpr int kMaxSplits = 64;
constexpr int kCtasPerSm = 4;     // split rows until the grid has this many CTAs per SM
constexpr int kMaxVocab = INT_MAX - (1 << 20);  // keeps int index math overflow-free

// grid (R, splits), block kScanThreads. Row r = [head scalars | nvec aligned
// 16-byte vectors | tail scalars]; the head aligns the vectors for any V (e.g.
// odd V makes every other fp32 row start misaligned). Split s covers a
// contiguous range of vectors; split 0 adds the head, the last split the tail.
template <typename T>
__global__ void __launch_bounds__(kScanThreads)
scan_rows_kernel(const T* __restrict__ logits, int V, int suppress,
                 RowState* __restrict__ partial, int64_t* __restrict__ tokens,
                 float* __restrict__ confidence) {
  constexpr int N = 16 / sizeof(T);
  const int row = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
  const int stride = blockDim.x;
  const T* p = logits + (int64_t)row * V;
  const int head = min(V, (int)(((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / sizeof(T)));
  const int nvec = (V - head) / N;
  const int per_split = (nvec + splits - 1) / splits;
  const int v_end = min(nvec, (split + 1) * per_split);
  const T* body = p + head;

  RowState st = empty_state();
  if (split == 0)
    for (int i = threadIdx.x; i < head; i += stride) push_scalar(st, p, i, suppress);
  int i = min(nvec, split * per_split) + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < v_end; i += kUnroll * stride) {
    float x[kUnroll][N];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_vec(body + (int64_t)(i + u * stride) * N, x[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) push(st, x[u], head + (i + u * stride) * N, suppress);
  }
  for (; i < v_end; i += stride) {
    float x[N];
    load_vec(body + (int64_t)i * N, x);
    push(st, x, head + i * N, suppress);
  }
  if (split == splits - 1)
    for (int t = head + nvec * N + threadIdx.x; t < V; t += stride) push_scalar(st, p, t, suppress);

  st = block_reduce(st);
  if (threadIdx.x != 0) return;
  if (splits == 1)
    write_result(st, V, suppress, tokens + row, confidence + row);
  else
    partial[(int64_t)row * splits + split] = st;
}

struct AcceptArgs {
  const int* block_start;   // [B]
  const int* block_len;     // [B]
  const float* threshold;   // [B]
  const int64_t* stop_ids;  // [S]
  int B, S, R;
  int* accept_len;          // [B]
};

// The accept rule of one block (csrc/accept_rule.h).
__device__ int accept_block(int64_t b, const AcceptArgs& a, const int64_t* tokens,
                            const float* confidence) {
  return accept_length(tokens, confidence, a.block_start[b], a.block_len[b], a.threshold[b],
                       a.stop_ids, a.S, a.R);
}

// splits > 1: launched as ONE CTA that first merges every row's partials (one
// warp per row), so the accept step below sees all rows after the barrier.
__global__ void __launch_bounds__(kFinalizeThreads)
finalize_accept_kernel(const RowState* __restrict__ partial, int splits, int V, int suppress,
                       int64_t* __restrict__ tokens, float* __restrict__ confidence,
                       AcceptArgs a) {
  if (splits > 1) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int r = warp; r < a.R; r += nwarps) {
      RowState st = empty_state();
      for (int k = lane; k < splits; k += 32) merge(st, partial[(int64_t)r * splits + k]);
      st = warp_reduce(st);
      if (lane == 0) write_result(st, V, suppress, tokens + r, confidence + r);
    }
    __syncthreads();
  }
  // 64-bit: a 32-bit b += gridDim.x * blockDim.x could wrap for a huge B.
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < a.B; b += step)
    a.accept_len[b] = accept_block(b, a, tokens, confidence);
}

int sm_count(int device) {
  // torch caches the properties per device behind a once-flag (thread-safe).
  return std::max(at::cuda::getDeviceProperties(device)->multiProcessorCount, 1);
}

// Enough CTAs to fill the GPU, but at least two vectors per thread per split.
int choose_splits(int64_t R, int64_t V, int vec, int device) {
  const int64_t target = (int64_t)kCtasPerSm * sm_count(device);
  if (R == 0 || R >= target) return 1;
  const int64_t by_work = std::max<int64_t>(1, V / vec / (2 * kScanThreads));
  return (int)std::min<int64_t>({(target + R - 1) / R, by_work, kMaxSplits});
}

template <typename T>
cudaError_t launch_confidence_scan(const T* logits, int R, int V, int suppress, int splits,
                                   RowState* partial, int64_t* tokens, float* confidence,
                                   const AcceptArgs& a, cudaStream_t stream) {
  if (R > 0) {
    scan_rows_kernel<T><<<dim3(R, splits), kScanThreads, 0, stream>>>(
        logits, V, suppress, partial, tokens, confidence);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (a.B == 0 && splits == 1) return cudaSuccess;
  const int grid = splits > 1 ? 1 : (a.B + kFinalizeThreads - 1) / kFinalizeThreads;
  finalize_accept_kernel<<<grid, kFinalizeThreads, 0, stream>>>(
      partial, splits, V, suppress, tokens, confidence, a);
  return cudaGetLastError();
}

// Shape/dtype/device checks shared with the CPU op (csrc/checks.h: ValueError naming the
// argument). Value checks (block ranges, thresholds) would need a host sync: see the file
// comment for what the kernels do instead.
void check_inputs(const at::Tensor& logits, const at::Tensor& block_start,
                  const at::Tensor& block_len, const at::Tensor& threshold,
                  const std::optional<at::Tensor>& stop_token_ids) {
  const char* op = "confidence_scan";
  check_scan_args(logits, block_start, block_len, threshold, stop_token_ids);
  MTP_CHECK_ARG(logits.is_cuda(), op, "logits must be a CUDA tensor, got ", logits.device());
  const int64_t R = logits.size(0), V = logits.size(1);
  MTP_CHECK_ARG(V >= 1 && V <= kMaxVocab, op, "logits vocabulary V must be in [1, ", kMaxVocab,
                "], got ", V);
  MTP_CHECK_ARG(R <= INT_MAX, op, "logits has too many rows: ", R);
  MTP_CHECK_ARG(block_start.size(0) <= INT_MAX, op, "block_start has too many blocks: ", block_start.size(0));
  if (stop_token_ids.has_value())
    MTP_CHECK_ARG(stop_token_ids->numel() <= INT_MAX, op, "stop_token_ids is too long");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> confidence_scan_cuda(
    const at::Tensor& logits, const at::Tensor& block_start, const at::Tensor& block_len,
    const at::Tensor& threshold, const std::optional<at::Tensor>& stop_token_ids,
    int64_t suppress_token_id) {
  check_inputs(logits, block_start, block_len, threshold, stop_token_ids);
  const c10::cuda::CUDAGuard guard(logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logits.device().index());
  const int R = (int)logits.size(0), V = (int)logits.size(1), B = (int)block_start.size(0);
  const int vec = 16 / (int)logits.element_size();
  const int splits = choose_splits(R, V, vec, logits.device().index());

  auto tokens = at::empty({R}, logits.options().dtype(at::kLong));           // [R]
  auto confidence = at::empty({R}, logits.options().dtype(at::kFloat));      // [R]
  auto accept_len = at::empty({B}, logits.options().dtype(at::kInt));        // [B]
  at::Tensor partial;  // [R * splits] RowState, only for split rows
  if (splits > 1)
    partial = at::empty({(int64_t)R * splits * (int64_t)sizeof(RowState)},
                        logits.options().dtype(at::kByte));
  auto* partial_ptr = splits > 1 ? reinterpret_cast<RowState*>(partial.data_ptr()) : nullptr;

  const bool has_stop = stop_token_ids.has_value() && stop_token_ids->numel() > 0;
  AcceptArgs a{block_start.data_ptr<int>(), block_len.data_ptr<int>(),
               threshold.data_ptr<float>(),
               has_stop ? stop_token_ids->data_ptr<int64_t>() : nullptr,
               B, has_stop ? (int)stop_token_ids->numel() : 0, R, accept_len.data_ptr<int>()};
  auto* tok = tokens.data_ptr<int64_t>();
  auto* conf = confidence.data_ptr<float>();
  // An id outside [0, V) matches no column (as on the CPU); -1 also keeps it out of int range.
  const int sup = (suppress_token_id >= 0 && suppress_token_id < V) ? (int)suppress_token_id : -1;
  cudaError_t err = cudaSuccess;
  switch (logits.scalar_type()) {
    case at::kFloat:
      err = launch_confidence_scan(logits.data_ptr<float>(), R, V, sup, splits, partial_ptr,
                                   tok, conf, a, stream);
      break;
    case at::kHalf:
      err = launch_confidence_scan(logits.data_ptr<at::Half>(), R, V, sup, splits, partial_ptr,
                                   tok, conf, a, stream);
      break;
    default:
      err = launch_confidence_scan(logits.data_ptr<at::BFloat16>(), R, V, sup, splits,
                                   partial_ptr, tok, conf, a, stream);
  }
  TORCH_CHECK(err == cudaSuccess, "confidence_scan: CUDA launch failed: ",
              cudaGetErrorString(err));
  return {tokens, confidence, accept_len};
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CUDA, m) {
  m.impl("confidence_scan", &confidence_scan_cuda);
}

}  // namespace sglang_mtp
