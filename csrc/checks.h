// Argument checks shared by the CPU and CUDA launchers: every message names the op and the
// argument, so a caller sees what to fix instead of a crash deep inside a kernel.
#pragma once
#include <ATen/ATen.h>

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

}  // namespace sglang_mtp
