// kv_commit, CPU: after an MTP forward, keep the KV slots of the leading real-token query
// positions in the request's row of req_to_token and hand the rest (mask positions) back.
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "checks.h"

namespace sglang_mtp {
namespace {

constexpr const char* kOp = "kv_commit";

void check_args(const at::Tensor& req_to_token, const at::Tensor& req_pool_indices, const at::Tensor& seq_lens,
                const at::Tensor& cache_loc, const at::Tensor& keep) {
  check_tensor(req_to_token, kOp, "req_to_token", at::kInt, 2);
  check_tensor(req_pool_indices, kOp, "req_pool_indices", at::kLong, 1);
  check_tensor(seq_lens, kOp, "seq_lens", at::kLong, 1);
  check_tensor(cache_loc, kOp, "cache_loc", at::kLong, 2);
  check_tensor(keep, kOp, "keep", at::kInt, 1);
  const int64_t B = req_pool_indices.size(0);
  check_len(seq_lens, B, kOp, "seq_lens", "B");
  check_len(cache_loc, B, kOp, "cache_loc", "B (rows)");
  check_len(keep, B, kOp, "keep", "B");
  check_same_device(req_pool_indices, req_to_token, kOp, "req_pool_indices", "req_to_token");
  check_same_device(seq_lens, req_to_token, kOp, "seq_lens", "req_to_token");
  check_same_device(cache_loc, req_to_token, kOp, "cache_loc", "req_to_token");
  check_same_device(keep, req_to_token, kOp, "keep", "req_to_token");
}

// Value checks need the data; on the CPU that costs no device round trip.
void check_values(const int64_t* pool, const int64_t* lens, const int64_t* loc, const int32_t* keep, int64_t B,
                  int64_t W, int64_t P, int64_t C) {
  std::vector<bool> seen(P, false);
  for (int64_t b = 0; b < B; ++b) {
    MTP_CHECK_ARG(pool[b] >= 0 && pool[b] < P, kOp, "req_pool_indices[", b, "] = ", pool[b], " is outside [0, ",
                  P, ")");
    MTP_CHECK_ARG(!seen[pool[b]], kOp, "req_pool_indices repeats row ", pool[b]);
    seen[pool[b]] = true;
    MTP_CHECK_ARG(keep[b] >= 0 && keep[b] <= W, kOp, "keep[", b, "] = ", keep[b], " is outside [0, W = ", W, "]");
    MTP_CHECK_ARG(lens[b] >= 0 && lens[b] + keep[b] <= C, kOp, "request ", b, " would commit past the ", C,
                  " columns of req_to_token (seq_lens ", lens[b], " + keep ", keep[b], ")");
    for (int64_t j = 0; j < keep[b]; ++j) {
      const int64_t slot = loc[b * W + j];
      MTP_CHECK_ARG(slot >= 0 && slot <= INT32_MAX, kOp, "cache_loc[", b, ", ", j, "] = ", slot,
                    " is not a valid int32 slot id");
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kv_commit_cpu(at::Tensor& req_to_token,
                                                              const at::Tensor& req_pool_indices,
                                                              const at::Tensor& seq_lens, const at::Tensor& cache_loc,
                                                              const at::Tensor& keep) {
  check_args(req_to_token, req_pool_indices, seq_lens, cache_loc, keep);
  const int64_t B = cache_loc.size(0), W = cache_loc.size(1);
  const int64_t P = req_to_token.size(0), C = req_to_token.size(1);
  const int64_t* pool = req_pool_indices.data_ptr<int64_t>();
  const int64_t* lens = seq_lens.data_ptr<int64_t>();
  const int64_t* loc = cache_loc.data_ptr<int64_t>();
  const int32_t* kp = keep.data_ptr<int32_t>();
  check_values(pool, lens, loc, kp, B, W, P, C);

  auto new_seq_lens = at::empty({B}, seq_lens.options());
  auto released = at::full({B * W}, -1, cache_loc.options());
  int32_t* table = req_to_token.data_ptr<int32_t>();
  int64_t* out_lens = new_seq_lens.data_ptr<int64_t>();
  int64_t* rel = released.data_ptr<int64_t>();
  int64_t n = 0;
  for (int64_t b = 0; b < B; ++b) {
    int32_t* dst = table + pool[b] * C + lens[b];
    for (int64_t j = 0; j < kp[b]; ++j) dst[j] = static_cast<int32_t>(loc[b * W + j]);
    for (int64_t j = kp[b]; j < W; ++j) rel[n++] = loc[b * W + j];
    out_lens[b] = lens[b] + kp[b];
  }
  return {new_seq_lens, released, at::scalar_tensor(n, cache_loc.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CPU, m) { m.impl("kv_commit", &kv_commit_cpu); }

}  // namespace sglang_mtp
