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
#include "scan_common.h"

namespace sglang_mtp {
namespace {

using row_scan::scan_row;

std::tuple<at::Tensor, at::Tensor, at::Tensor> confidence_scan_cpu(
    const at::Tensor& logits, const at::Tensor& block_start, const at::Tensor& block_len,
    const at::Tensor& threshold, const std::optional<at::Tensor>& stop_token_ids, int64_t suppress_token_id) {
  check_scan_args(logits, block_start, block_len, threshold, stop_token_ids);
  MTP_CHECK_ARG(logits.size(1) >= 1, "confidence_scan", "logits must have a vocabulary of at least 1 (V = 0)");
  const int64_t R = logits.size(0), V = logits.size(1), B = block_start.size(0);
  check_scan_blocks(block_start.data_ptr<int32_t>(), block_len.data_ptr<int32_t>(), threshold.data_ptr<float>(), B, R,
                    "confidence_scan");
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
  accept_blocks_cpu(tokens, confidence, block_start, block_len, threshold, stop_token_ids, accept);
  return {tokens, confidence, accept};
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CPU, m) { m.impl("confidence_scan", &confidence_scan_cpu); }

}  // namespace sglang_mtp
