// Argument checks shared by the CPU and CUDA launchers: every message names the op and the
// argument, so a caller sees what to fix instead of a crash deep inside a kernel.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <vector>
#include <tuple>
#include <utility>

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

// Block values of confidence_scan / sample_scan on the CPU (reading them costs no device
// round trip there): lengths >= 1, inside the R rows, thresholds in [0, 1], no overlap.
inline void check_scan_blocks(const int32_t* start, const int32_t* len, const float* tau, int64_t B, int64_t R,
                              const char* op) {
  std::vector<std::pair<int32_t, int32_t>> spans;
  for (int64_t b = 0; b < B; ++b) {
    MTP_CHECK_ARG(len[b] >= 1, op, "block_len[", b, "] must be >= 1, got ", len[b]);
    MTP_CHECK_ARG(start[b] >= 0 && static_cast<int64_t>(start[b]) + len[b] <= R, op, "block ", b, " (block_start ",
                  start[b], ", block_len ", len[b], ") lies outside the ", R, " logits rows");
    MTP_CHECK_ARG(tau[b] >= 0.0f && tau[b] <= 1.0f, op, "threshold[", b, "] must be in [0, 1], got ", tau[b]);
    spans.emplace_back(start[b], start[b] + len[b]);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    MTP_CHECK_ARG(spans[i].first >= spans[i - 1].second, op, "blocks overlap at row ", spans[i].first);
}

// sample_scan's per-row sampling arguments: inv_temperature float32 [R], seed and position
// int64 [R], on the logits' device (the scan arguments are checked by confidence_scan).
inline void check_sample_args(const at::Tensor& logits, const at::Tensor& inv_temperature, const at::Tensor& seed,
                              const at::Tensor& position, const char* op) {
  MTP_CHECK_ARG(logits.dim() == 2, op, "logits must be 2-D [R, V], got ", logits.dim(), "-D");
  const int64_t R = logits.size(0);
  using Arg = std::tuple<const at::Tensor*, const char*, at::ScalarType>;
  for (const auto& [t, name, dtype] : {Arg{&inv_temperature, "inv_temperature", at::kFloat},
                                       Arg{&seed, "seed", at::kLong}, Arg{&position, "position", at::kLong}}) {
    check_tensor(*t, op, name, dtype, 1);
    check_len(*t, R, op, name, "R (logits rows)");
    check_same_device(*t, logits, op, name, "logits");
  }
}

// The MTP step state both step ops read ([P] per slot; pending [P, Pw]).
inline void check_step_state(const at::Tensor& pending, const at::Tensor& pending_len, const at::Tensor& draft_len,
                             const at::Tensor& k, const at::Tensor& verify, const at::Tensor& first,
                             const char* op) {
  check_tensor(pending, op, "pending", at::kLong, 2);
  const int64_t P = pending.size(0);
  using Arg = std::tuple<const at::Tensor*, const char*, at::ScalarType>;
  for (const auto& [t, name, dtype] : {Arg{&pending_len, "pending_len", at::kInt}, Arg{&draft_len, "draft_len", at::kInt},
                                       Arg{&k, "k", at::kInt}, Arg{&verify, "verify", at::kBool},
                                       Arg{&first, "first", at::kBool}}) {
    check_tensor(*t, op, name, dtype, 1);
    check_len(*t, P, op, name, "P (pending rows)");
    check_same_device(*t, pending, op, name, "pending");
  }
}

// A per-slot [P] tensor (threshold, first_token, sampled) or a per-request [B] one.
inline void check_vector(const at::Tensor& t, const at::Tensor& pending, int64_t n, const char* what,
                         at::ScalarType dtype, const char* op, const char* name) {
  check_tensor(t, op, name, dtype, 1);
  check_len(t, n, op, name, what);
  check_same_device(t, pending, op, name, "pending");
}

// rows (the batch's pool rows) and seq_lens (committed KV lengths): int64 [B]; width in [1, Pw].
inline void check_step_batch(const at::Tensor& rows, const at::Tensor& seq_lens, const at::Tensor& pending,
                             int64_t width, const char* op) {
  check_vector(rows, pending, rows.dim() == 1 ? rows.size(0) : -1, "B", at::kLong, op, "rows");
  check_vector(seq_lens, pending, rows.size(0), "B", at::kLong, op, "seq_lens");
  MTP_CHECK_ARG(width >= 1 && width <= pending.size(1), op, "width must be in [1, ", pending.size(1),
                "] (the pending width), got ", width);
}

// The step's block cap (load-adaptive width): at least 1 (a block always has its first row).
inline void check_k_cap(int64_t k_cap, const char* op) {
  MTP_CHECK_ARG(k_cap >= 1, op, "k_cap must be >= 1, got ", k_cap);
}

inline void check_step_inputs_args(const at::Tensor& pending, const at::Tensor& pending_len,
                                   const at::Tensor& draft_len, const at::Tensor& k, const at::Tensor& threshold,
                                   const at::Tensor& verify, const at::Tensor& first, const at::Tensor& rows,
                                   const at::Tensor& seq_lens, const at::Tensor& req_to_token, int64_t width,
                                   int64_t max_position, const char* op) {
  check_step_state(pending, pending_len, draft_len, k, verify, first, op);
  check_vector(threshold, pending, pending.size(0), "P (pending rows)", at::kFloat, op, "threshold");
  check_step_batch(rows, seq_lens, pending, width, op);
  check_tensor(req_to_token, op, "req_to_token", at::kInt, 2);
  check_same_device(req_to_token, pending, op, "req_to_token", "pending");
  MTP_CHECK_ARG(max_position >= 1, op, "max_position must be >= 1, got ", max_position);
}

inline void check_accept_commit_args(const at::Tensor& tokens, const at::Tensor& accept_len, const at::Tensor& rows,
                                     const at::Tensor& seq_lens, const at::Tensor& pending,
                                     const at::Tensor& pending_len, const at::Tensor& draft_len, const at::Tensor& k,
                                     const at::Tensor& verify, const at::Tensor& first, const at::Tensor& first_token,
                                     const at::Tensor& sampled, const std::optional<at::Tensor>& samples,
                                     int64_t width, const char* op) {
  check_step_state(pending, pending_len, draft_len, k, verify, first, op);
  check_step_batch(rows, seq_lens, pending, width, op);
  const int64_t B = rows.size(0), P = pending.size(0);
  check_vector(tokens, pending, B * width, "B * width", at::kLong, op, "tokens");
  check_vector(accept_len, pending, B, "B", at::kInt, op, "accept_len");
  check_vector(first_token, pending, P, "P (pending rows)", at::kLong, op, "first_token");
  check_vector(sampled, pending, P, "P (pending rows)", at::kBool, op, "sampled");
  if (samples.has_value()) check_vector(*samples, pending, B, "B", at::kLong, op, "samples");
}

}  // namespace sglang_mtp
