// confidence_scan, CPU: per row one pass over the vocabulary that yields the argmax and the
// top-1 softmax probability (row_scan_cpu.h), then the ConfAdapt accept length per block.
//
// Defined results for non-finite logits (the CUDA kernel and reference.py agree):
// - NaN counts as -inf; the suppressed id counts as -inf.
// - a row with +inf entries: the first +inf wins, confidence = 1 / (number of +inf entries).
// - a row with no entry above -inf: token = lowest id that is not suppressed, confidence 0.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "checks.h"
#include "row_scan_cpu.h"

namespace sglang_mtp {
namespace {

using row_scan::scan_row;

// Value checks that need the data (fine on the CPU: no device round trip).
void check_blocks(const int32_t* start, const int32_t* len, const float* tau, int64_t B, int64_t R) {
  const char* op = "confidence_scan";
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

int32_t accept_length(const int64_t* tokens, const float* conf, int32_t start, int32_t len, float tau,
                      const int64_t* stops, int64_t S) {
  int32_t run = 0;
  while (run < len && conf[start + run] >= tau) ++run;
  const int32_t a = run < 1 ? 1 : run;
  for (int32_t j = 0; j < a; ++j)
    for (int64_t s = 0; s < S; ++s)
      if (tokens[start + j] == stops[s]) return j + 1;
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> confidence_scan_cpu(
    const at::Tensor& logits, const at::Tensor& block_start, const at::Tensor& block_len,
    const at::Tensor& threshold, const std::optional<at::Tensor>& stop_token_ids, int64_t suppress_token_id) {
  check_scan_args(logits, block_start, block_len, threshold, stop_token_ids);
  MTP_CHECK_ARG(logits.size(1) >= 1, "confidence_scan", "logits must have a vocabulary of at least 1 (V = 0)");
  const int64_t R = logits.size(0), V = logits.size(1), B = block_start.size(0);
  check_blocks(block_start.data_ptr<int32_t>(), block_len.data_ptr<int32_t>(), threshold.data_ptr<float>(), B, R);
  auto tokens = at::empty({R}, logits.options().dtype(at::kLong));
  auto confidence = at::empty({R}, logits.options().dtype(at::kFloat));
  auto accept = at::empty({B}, logits.options().dtype(at::kInt));
  int64_t* tok = tokens.data_ptr<int64_t>();
  float* conf = confidence.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "confidence_scan_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    at::parallel_for(0, R, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) scan_row(x + r * V, V, suppress_token_id, tok + r, conf + r);
    });
  });
  const int64_t S = stop_token_ids.has_value() ? stop_token_ids->numel() : 0;
  const int64_t* stops = S > 0 ? stop_token_ids->data_ptr<int64_t>() : nullptr;
  const int32_t* start = block_start.data_ptr<int32_t>();
  const int32_t* len = block_len.data_ptr<int32_t>();
  const float* tau = threshold.data_ptr<float>();
  int32_t* acc = accept.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b) acc[b] = accept_length(tok, conf, start[b], len[b], tau[b], stops, S);
  return {tokens, confidence, accept};
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CPU, m) { m.impl("confidence_scan", &confidence_scan_cpu); }

}  // namespace sglang_mtp
