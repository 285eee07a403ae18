// Argument checks shared by the CPU and CUDA launchers: every message names the op and the
// argument, so a caller sees what to fix instead of a crash deep inside a kernel.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#define MTP_CHECK_ARG(cond, op, ...) TORCH_CHECK_VALUE(cond, op, ": ", __VA_ARGS__)

namespace sglang_mtp {

inline void check_tensor(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype,
                         int64_t dim) {
  MTP_CHECK_ARG(t.dim() == dim, op, name, " must be ", dim, "-D, got ", t.dim(), "-D");
  MTP_CHECK_ARG(t.scalar_type() == dtype, op, name, " must be ", dtype, ", got ", t.scalar_type());
  MTP_CHECK_ARG(t.is_contiguous(), op, name, " must be contiguous");
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name,
                              const char* ref_name) {
  MTP_CHECK_ARG(t.device() == ref.device(), op, name, " is on ", t.device(), " but ", ref_name, " is on ",
                ref.device());
}

inline void check_len(const at::Tensor& t, int64_t n, const char* op, const char* name, const char* what) {
  MTP_CHECK_ARG(t.size(0) == n, op, name, " must have ", what, " = ", n, " entries, got ", t.size(0));
}

// The confidence_scan checks every device shares (shapes, dtypes, devices); launchers add
// their own limits. logits [R, V]; block_start, block_len int32 [B]; threshold float32 [B];
// stop_token_ids int64 [S] or none.
inline void check_scan_args(const at::Tensor& logits, const at::Tensor& block_start, const at::Tensor& block_len,
                            const at::Tensor& threshold, const std::optional<at::Tensor>& stop_token_ids) {
  const char* op = "confidence_scan";
  MTP_CHECK_ARG(logits.dim() == 2, op, "logits must be 2-D [R, V], got ", logits.dim(), "-D");
  const auto dt = logits.scalar_type();
  MTP_CHECK_ARG(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, op,
                "logits must be float32, bfloat16 or float16, got ", dt);
  MTP_CHECK_ARG(logits.is_contiguous(), op, "logits must be contiguous");
  check_tensor(block_start, op, "block_start", at::kInt, 1);
  check_tensor(block_len, op, "block_len", at::kInt, 1);
  check_tensor(threshold, op, "threshold", at::kFloat, 1);
  const int64_t B = block_start.size(0);
  check_len(block_len, B, op, "block_len", "B");
  check_len(threshold, B, op, "threshold", "B");
  check_same_device(block_start, logits, op, "block_start", "logits");
  check_same_device(block_len, logits, op, "block_len", "logits");
  check_same_device(threshold, logits, op, "threshold", "logits");
  if (stop_token_ids.has_value()) {
    check_tensor(*stop_token_ids, op, "stop_token_ids", at::kLong, 1);
    check_same_device(*stop_token_ids, logits, op, "stop_token_ids", "logits");
  }
}

}  // namespace sglang_mtp
