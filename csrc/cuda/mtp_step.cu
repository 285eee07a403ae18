// step_inputs and accept_commit, CUDA: one thread per request, each running the shared
// per-request rule (csrc/mtp_step_rule.h). Safe under CUDA-graph capture: no host sync, the
// only allocations are at::empty on the current stream, and no value is checked on the host.
// Defined results for inputs the CPU op rejects: a row outside [0, P) gets zero outputs and
// leaves the state alone; other out-of-range values are clamped into their tensors.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "../mtp_step_io.h"

namespace sglang_mtp {
namespace {

using step_rule::State;
constexpr int kThreads = 128;

__global__ void step_inputs_kernel(State s, int64_t P, const int64_t* rows, const int64_t* seq_lens,
                                   const int32_t* req_to_token, int64_t C, int64_t mask, int64_t W,
                                   int64_t max_position, int64_t k_cap, int64_t B, step_rule::InputsOut o) {
  const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int64_t r = rows[b];
  if (r < 0 || r >= P) {
    for (int64_t j = 0; j < W; ++j) o.input_ids[b * W + j] = o.positions[b * W + j] = o.out_cache_loc[b * W + j] = 0;
    o.attn_seq_lens[b] = 0;
    o.block_start[b] = -1;  // the scan gives such a block accept_len 0 and reads none of it
    o.block_len[b] = 0;
    o.block_threshold[b] = 0.0f;
    return;
  }
  step_rule::step_inputs_one(b, r, seq_lens[b], s, req_to_token, C, mask, W, max_position, k_cap, o);
}

__global__ void accept_commit_kernel(State s, int64_t P, const int64_t* rows, const int64_t* seq_lens,
                                     const int64_t* tokens, const int32_t* accept_len, const int64_t* samples,
                                     int64_t mask, int64_t W, int64_t k_cap, int64_t B, step_rule::AcceptOut o) {
  const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int64_t r = rows[b];
  if (r < 0 || r >= P) {
    for (int64_t c = 0; c <= W; ++c) o.emitted[b * (W + 1) + c] = 0;
    for (int64_t c = 0; c < W; ++c) o.emit_rows[b * W + c] = o.predict[b * W + c] = 0;
    o.emit_len[b] = 0;
    o.new_seq_lens[b] = seq_lens[b];
    o.last_token[b] = 0;
    return;
  }
  step_rule::accept_commit_one(b, r, seq_lens[b], tokens, accept_len[b], samples, s, mask, W, k_cap, o);
}

int blocks_for(int64_t B) { return (int)((B + kThreads - 1) / kThreads); }

InputsTuple step_inputs_cuda(
    const at::Tensor& pending, const at::Tensor& pending_len, const at::Tensor& draft_len, const at::Tensor& k,
    const at::Tensor& threshold, const at::Tensor& verify, const at::Tensor& first, const at::Tensor& rows,
    const at::Tensor& seq_lens, const at::Tensor& req_to_token, int64_t mask_token_id, int64_t width,
    int64_t max_position, int64_t k_cap) {
  const char* op = "step_inputs";
  check_step_inputs_args(pending, pending_len, draft_len, k, threshold, verify, first, rows, seq_lens, req_to_token,
                         width, max_position, op);
  check_k_cap(k_cap, op);
  const c10::cuda::CUDAGuard guard(pending.device());
  const int64_t B = rows.size(0), W = width, C = req_to_token.size(1);
  const int64_t P = std::min(pending.size(0), req_to_token.size(0));
  auto out = alloc_inputs(B, W, seq_lens);
  if (B == 0) return out;
  const auto s = state_view(pending, pending_len, draft_len, k, threshold, verify, first, {}, {});
  const auto o = inputs_view(out);
  step_inputs_kernel<<<blocks_for(B), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      s, P, rows.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(), req_to_token.data_ptr<int32_t>(), C,
      mask_token_id, W, max_position, k_cap, B, o);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

AcceptTuple accept_commit_cuda(
    const at::Tensor& tokens, const at::Tensor& accept_len, const at::Tensor& rows, const at::Tensor& seq_lens,
    at::Tensor& pending, at::Tensor& pending_len, at::Tensor& draft_len, const at::Tensor& k,
    const at::Tensor& verify, at::Tensor& first, const at::Tensor& first_token, const at::Tensor& sampled,
    const std::optional<at::Tensor>& samples, int64_t mask_token_id, int64_t width, int64_t k_cap) {
  const char* op = "accept_commit";
  check_accept_commit_args(tokens, accept_len, rows, seq_lens, pending, pending_len, draft_len, k, verify, first,
                           first_token, sampled, samples, width, op);
  check_k_cap(k_cap, op);
  const c10::cuda::CUDAGuard guard(pending.device());
  const int64_t B = rows.size(0), W = width;
  auto out = alloc_accept(B, W, seq_lens);
  if (B == 0) return out;
  const auto s = state_view(pending, pending_len, draft_len, k, {}, verify, first, first_token, sampled);
  const auto o = accept_view(out);
  accept_commit_kernel<<<blocks_for(B), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      s, pending.size(0), rows.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(), tokens.data_ptr<int64_t>(),
      accept_len.data_ptr<int32_t>(), samples.has_value() ? samples->data_ptr<int64_t>() : nullptr, mask_token_id,
      W, k_cap, B, o);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CUDA, m) {
  m.impl("step_inputs", &step_inputs_cuda);
  m.impl("accept_commit", &accept_commit_cuda);
}

}  // namespace sglang_mtp
