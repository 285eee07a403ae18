// Host-side pieces shared by the scan ops' launchers (csrc/confidence_scan.cpp,
// csrc/sample_scan.cpp, csrc/cuda/sample_scan.cu).
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

#include "accept_rule.h"

namespace sglang_mtp {

using ScanResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// confidence_scan through the dispatcher (the CPU or CUDA kernel, by the logits' device).
inline ScanResult greedy_scan(const at::Tensor& logits, const at::Tensor& block_start, const at::Tensor& block_len,
                              const at::Tensor& threshold, const std::optional<at::Tensor>& stop_token_ids,
                              int64_t suppress_token_id) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sglang_mtp::confidence_scan", "")
                       .typed<ScanResult(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&, int64_t)>();
  return op.call(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id);
}

// CPU: the accept length of every block (csrc/accept_rule.h) into accept int32 [B].
inline void accept_blocks_cpu(const at::Tensor& tokens, const at::Tensor& confidence, const at::Tensor& block_start,
                              const at::Tensor& block_len, const at::Tensor& threshold,
                              const std::optional<at::Tensor>& stop_token_ids, at::Tensor& accept) {
  const int64_t S = stop_token_ids.has_value() ? stop_token_ids->numel() : 0;
  const int64_t* stops = S > 0 ? stop_token_ids->data_ptr<int64_t>() : nullptr;
  const int64_t* tok = tokens.data_ptr<int64_t>();
  const float* conf = confidence.data_ptr<float>();
  const int32_t* start = block_start.data_ptr<int32_t>();
  const int32_t* len = block_len.data_ptr<int32_t>();
  const float* tau = threshold.data_ptr<float>();
  int32_t* acc = accept.data_ptr<int32_t>();
  const int64_t R = tokens.size(0);
  for (int64_t b = 0; b < block_start.size(0); ++b)
    acc[b] = accept_length(tok, conf, start[b], len[b], tau[b], stops, S, R);
}

}  // namespace sglang_mtp
