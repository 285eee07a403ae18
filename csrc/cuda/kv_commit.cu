// CUDA implementation of sglang_mtp::kv_commit (schema in csrc/ops.cpp).
//
// One launch of ONE CTA: a decode batch commits B*W slots (B up to a few
// thousand, W = k <= ~16), far too little work to fill a GPU, and a single CTA
// can compute the released-slot offsets (an exclusive prefix sum over requests
// of W - keep[b]) with block scans and no second kernel or workspace. Safe under
// CUDA-graph capture: no host sync, only at::empty on the current stream.
//
// Defined behaviour for inputs the CPU op rejects (values are on the device, so
// the CUDA op cannot check them without a host sync):
//   * keep[b] is clamped to [0, W] for everything (new_seq_lens, released, writes);
//   * a request whose pool index is outside [0, P), or whose commit range
//     [seq_lens[b], seq_lens[b] + keep[b]) is not inside [0, C), writes nothing
//     into req_to_token (new_seq_lens and released are computed as usual);
//   * repeated pool indices: the writes race (which value lands is unspecified),
//     but every write stays inside its row.
// req_to_token is never accessed out of bounds.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <tuple>

namespace sglang_mtp {
namespace {

constexpr int kCommitThreads = 256;

// Exclusive prefix sum of v over the CTA; *total receives the CTA-wide sum.
// Ends with a barrier so the shared slots can be reused by the next call.
__device__ __forceinline__ int64_t block_exclusive_scan(int64_t v, int64_t* total) {
  __shared__ int64_t warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  int64_t incl = v;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int64_t n = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += n;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int64_t w = lane < nwarps ? warp_sums[lane] : 0;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int64_t n = __shfl_up_sync(0xffffffffu, w, d);
      if (lane >= d) w += n;
    }
    warp_sums[lane] = w;  // inclusive sums of the warp totals
  }
  __syncthreads();
  const int64_t before = warp > 0 ? warp_sums[warp - 1] : 0;
  *total = warp_sums[nwarps - 1];
  __syncthreads();
  return before + incl - v;
}

struct CommitArgs {
  int32_t* req_to_token;           // [P, C], updated in place
  const int64_t* req_pool_indices; // [B]
  const int64_t* seq_lens;         // [B]
  const int64_t* cache_loc;        // [B, W]
  const int32_t* keep;             // [B]
  int64_t P, C, B, W;
  int64_t* new_seq_lens;           // [B]
  int64_t* released;               // [B * W]
  int64_t* num_released;           // []
};

// Request b: commit its first `kept` slots, release the rest at `offset`.
__device__ __forceinline__ void commit_request(const CommitArgs& a, int64_t b, int64_t kept,
                                               int64_t offset) {
  const int64_t row = a.req_pool_indices[b], start = a.seq_lens[b];
  a.new_seq_lens[b] = start + kept;
  const int64_t* loc = a.cache_loc + b * a.W;
  // start <= C - kept (not start + kept <= C) so a huge seq_lens cannot overflow.
  const bool in_bounds = row >= 0 && row < a.P && start >= 0 && start <= a.C - kept;
  if (in_bounds) {
    int32_t* dst = a.req_to_token + row * a.C + start;
    for (int64_t j = 0; j < kept; ++j) dst[j] = static_cast<int32_t>(loc[j]);
  }
  for (int64_t j = kept; j < a.W; ++j) a.released[offset + j - kept] = loc[j];
}

// grid 1, block kCommitThreads. Requests are processed in chunks of blockDim.x;
// `carry` (identical in every thread) is the number released by earlier chunks.
__global__ void __launch_bounds__(kCommitThreads) kv_commit_kernel(CommitArgs a) {
  int64_t carry = 0;
  for (int64_t chunk = 0; chunk < a.B; chunk += blockDim.x) {
    const int64_t b = chunk + threadIdx.x;
    const bool live = b < a.B;
    int64_t kept = live ? (int64_t)a.keep[b] : 0;
    kept = kept < 0 ? 0 : (kept > a.W ? a.W : kept);
    int64_t chunk_total = 0;
    const int64_t offset = carry + block_exclusive_scan(live ? a.W - kept : 0, &chunk_total);
    if (live) commit_request(a, b, kept, offset);
    carry += chunk_total;
  }
  // Released slots occupy [0, carry) exactly; pad the rest.
  for (int64_t i = carry + threadIdx.x; i < a.B * a.W; i += blockDim.x) a.released[i] = -1;
  if (threadIdx.x == 0) *a.num_released = carry;
}

// Shape/dtype/device checks shared with the CPU op (csrc/checks.h: ValueError naming the
// argument). Value checks would need a host sync: see the file comment.
void check_inputs(const at::Tensor& req_to_token, const at::Tensor& req_pool_indices,
                  const at::Tensor& seq_lens, const at::Tensor& cache_loc,
                  const at::Tensor& keep) {
  const char* op = "kv_commit";
  check_tensor(req_to_token, op, "req_to_token", at::kInt, 2);          // [P, C]
  check_tensor(req_pool_indices, op, "req_pool_indices", at::kLong, 1); // [B]
  check_tensor(seq_lens, op, "seq_lens", at::kLong, 1);                 // [B]
  check_tensor(cache_loc, op, "cache_loc", at::kLong, 2);               // [B, W]
  check_tensor(keep, op, "keep", at::kInt, 1);                          // [B]
  const int64_t B = req_pool_indices.size(0);
  check_len(seq_lens, B, op, "seq_lens", "B");
  check_len(cache_loc, B, op, "cache_loc", "B (rows)");
  check_len(keep, B, op, "keep", "B");
  MTP_CHECK_ARG(req_to_token.is_cuda(), op, "req_to_token must be a CUDA tensor, got ",
                req_to_token.device());
  check_same_device(req_pool_indices, req_to_token, op, "req_pool_indices", "req_to_token");
  check_same_device(seq_lens, req_to_token, op, "seq_lens", "req_to_token");
  check_same_device(cache_loc, req_to_token, op, "cache_loc", "req_to_token");
  check_same_device(keep, req_to_token, op, "keep", "req_to_token");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kv_commit_cuda(
    at::Tensor& req_to_token, const at::Tensor& req_pool_indices, const at::Tensor& seq_lens,
    const at::Tensor& cache_loc, const at::Tensor& keep) {
  check_inputs(req_to_token, req_pool_indices, seq_lens, cache_loc, keep);
  const c10::cuda::CUDAGuard guard(req_to_token.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(req_to_token.device().index());
  const int64_t B = cache_loc.size(0), W = cache_loc.size(1);
  const auto opts = seq_lens.options();  // int64 on the same device

  auto new_seq_lens = at::empty({B}, opts);      // [B]
  auto released = at::empty({B * W}, opts);      // [B * W]
  auto num_released = at::empty({}, opts);       // []
  CommitArgs a{req_to_token.data_ptr<int32_t>(), req_pool_indices.data_ptr<int64_t>(),
               seq_lens.data_ptr<int64_t>(),     cache_loc.data_ptr<int64_t>(),
               keep.data_ptr<int32_t>(),         req_to_token.size(0),
               req_to_token.size(1),             B,
               W,                                new_seq_lens.data_ptr<int64_t>(),
               released.data_ptr<int64_t>(),     num_released.data_ptr<int64_t>()};
  kv_commit_kernel<<<1, kCommitThreads, 0, stream>>>(a);
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "kv_commit: CUDA launch failed: ", cudaGetErrorString(err));
  return {new_seq_lens, released, num_released};
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CUDA, m) {
  m.impl("kv_commit", &kv_commit_cuda);
}

}  // namespace sglang_mtp
