// sample_scan, CPU: confidence_scan where some rows sample instead of taking the argmax.
//
// Rows with inv_temperature 0 keep confidence_scan's greedy result (the same kernel, so a
// greedy request gets the same tokens whether or not its batch samples). A row with
// inv_temperature > 0 samples the Gumbel-max token of z = logits * inv_temperature with the
// counter-based noise of csrc/sample_rule.h (seed, position), and its confidence is
// softmax(z) at that token: the probability of the token actually sampled. Rows whose z has
// +inf entries or no finite entry keep the greedy result. Then the accept length per block.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "checks.h"
#include "row_scan_cpu.h"
#include "sample_rule.h"
#include "scan_common.h"

namespace sglang_mtp {
namespace {

template <typename T>
void sample_row(const T* row, int64_t V, int64_t suppress, float inv_t, int64_t seed, int64_t pos, int64_t* token,
                float* confidence) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float m = -kInf;
  for (int64_t i = 0; i < V; ++i) {
    const float z = row_scan::to_float(row[i]) * inv_t;
    if (i == suppress || std::isnan(z)) continue;
    if (z == kInf) return;  // keep the greedy result
    m = z > m ? z : m;
  }
  if (m == -kInf) return;
  const uint64_t key = noise::row_key(seed, pos);
  double sum = 0.0;
  float best = -kInf, z_best = 0.0f;
  int64_t arg = -1;
  for (int64_t i = 0; i < V; ++i) {
    const float z = row_scan::to_float(row[i]) * inv_t;
    if (i == suppress || std::isnan(z) || z == -kInf) continue;
    sum += std::exp(static_cast<double>(z) - m);
    if (z < m - noise::kWindow) continue;  // cannot win (see sample_rule.h)
    const float g = -std::log(-std::log(noise::uniform(key, i)));
    const float k = z + g;
    if (k > best) {  // strict: the lowest id wins a tie
      best = k;
      arg = i;
      z_best = z;
    }
  }
  *token = arg;
  *confidence = static_cast<float>(std::min(1.0, std::exp(static_cast<double>(z_best) - m) / sum));
}

ScanResult sample_scan_cpu(const at::Tensor& logits, const at::Tensor& block_start, const at::Tensor& block_len,
                           const at::Tensor& threshold, const std::optional<at::Tensor>& stop_token_ids,
                           int64_t suppress_token_id, const at::Tensor& inv_temperature, const at::Tensor& seed,
                           const at::Tensor& position) {
  const char* op = "sample_scan";
  check_sample_args(logits, inv_temperature, seed, position, op);
  auto [tokens, confidence, accept] =
      greedy_scan(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id);
  const int64_t R = logits.size(0), V = logits.size(1);
  const float* it = inv_temperature.data_ptr<float>();
  for (int64_t r = 0; r < R; ++r)
    MTP_CHECK_ARG(std::isfinite(it[r]) && it[r] >= 0.0f, op, "inv_temperature[", r,
                  "] must be finite and >= 0 (0 = greedy), got ", it[r]);
  const int64_t* sd = seed.data_ptr<int64_t>();
  const int64_t* ps = position.data_ptr<int64_t>();
  int64_t* tok = tokens.data_ptr<int64_t>();
  float* conf = confidence.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sample_scan_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    at::parallel_for(0, R, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r)
        if (it[r] > 0.0f) sample_row(x + r * V, V, suppress_token_id, it[r], sd[r], ps[r], tok + r, conf + r);
    });
  });
  accept_blocks_cpu(tokens, confidence, block_start, block_len, threshold, stop_token_ids, accept);
  return {tokens, confidence, accept};
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CPU, m) { m.impl("sample_scan", &sample_scan_cpu); }

}  // namespace sglang_mtp
