// Output allocation and raw-pointer views of the MTP step ops, shared by the CPU and CUDA
// launchers (csrc/mtp_step.cpp, csrc/cuda/mtp_step.cu).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "mtp_step_rule.h"

namespace sglang_mtp {

using InputsTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using AcceptTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// threshold, first_token and sampled may be undefined for the op that does not read them.
inline step_rule::State state_view(const at::Tensor& pending, const at::Tensor& pending_len,
                                   const at::Tensor& draft_len, const at::Tensor& k, const at::Tensor& threshold,
                                   const at::Tensor& verify, const at::Tensor& first, const at::Tensor& first_token,
                                   const at::Tensor& sampled) {
  return {pending.data_ptr<int64_t>(),
          pending_len.data_ptr<int32_t>(),
          draft_len.data_ptr<int32_t>(),
          k.data_ptr<int32_t>(),
          threshold.defined() ? threshold.data_ptr<float>() : nullptr,
          verify.data_ptr<bool>(),
          first.data_ptr<bool>(),
          first_token.defined() ? first_token.data_ptr<int64_t>() : nullptr,
          sampled.defined() ? sampled.data_ptr<bool>() : nullptr,
          pending.size(1)};
}

// input_ids, positions, out_cache_loc int64 [B, W]; attn_seq_lens int64 [B];
// block_start, block_len int32 [B]; block_threshold float32 [B] -- on seq_lens' device.
inline InputsTuple alloc_inputs(int64_t B, int64_t W, const at::Tensor& seq_lens) {
  auto i64 = seq_lens.options();
  return {at::empty({B, W}, i64), at::empty({B, W}, i64), at::empty({B}, i64), at::empty({B, W}, i64),
          at::empty({B}, i64.dtype(at::kInt)), at::empty({B}, i64.dtype(at::kInt)),
          at::empty({B}, i64.dtype(at::kFloat))};
}

inline step_rule::InputsOut inputs_view(const InputsTuple& t) {
  return {std::get<0>(t).data_ptr<int64_t>(), std::get<1>(t).data_ptr<int64_t>(), std::get<2>(t).data_ptr<int64_t>(),
          std::get<3>(t).data_ptr<int64_t>(), std::get<4>(t).data_ptr<int32_t>(), std::get<5>(t).data_ptr<int32_t>(),
          std::get<6>(t).data_ptr<float>()};
}

// emitted int64 [B, W+1]; emit_len int32 [B]; new_seq_lens, last_token int64 [B];
// emit_rows int64 [B, W]; predict int64 [B*W] -- on seq_lens' device.
inline AcceptTuple alloc_accept(int64_t B, int64_t W, const at::Tensor& seq_lens) {
  auto i64 = seq_lens.options();
  return {at::empty({B, W + 1}, i64), at::empty({B}, i64.dtype(at::kInt)), at::empty({B}, i64), at::empty({B}, i64),
          at::empty({B, W}, i64), at::empty({B * W}, i64)};
}

inline step_rule::AcceptOut accept_view(const AcceptTuple& t) {
  return {std::get<0>(t).data_ptr<int64_t>(), std::get<1>(t).data_ptr<int32_t>(), std::get<2>(t).data_ptr<int64_t>(),
          std::get<3>(t).data_ptr<int64_t>(), std::get<4>(t).data_ptr<int64_t>(), std::get<5>(t).data_ptr<int64_t>()};
}

}  // namespace sglang_mtp
