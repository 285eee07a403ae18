// confidence_scan, CPU: per row one pass over the vocabulary that yields the argmax and the
// top-1 softmax probability, then the ConfAdapt accept length per request block.
//
// Defined results for non-finite logits (the CUDA kernel and reference.py agree):
// - NaN counts as -inf; the suppressed id counts as -inf.
// - a row with +inf entries: the first +inf wins, confidence = 1 / (number of +inf entries).
// - a row with no entry above -inf: token = lowest id that is not suppressed, confidence 0.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "checks.h"

namespace sglang_mtp {
namespace {

constexpr int64_t kChunk = 2048;  // floats per L1-resident chunk
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// GCC/Clang vector extensions: portable 8-lane code. The row scan is compiled twice, once for
// AVX2+FMA (picked at run time when the CPU has them) and once for the baseline ISA.
#define MTP_INLINE inline __attribute__((always_inline))
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

MTP_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// exp(x) for x <= 0 without a libm call (Cody-Waite range reduction, Cephes' degree-6
// polynomial; ~2 ulp). Inputs below -87 give exactly 0.
MTP_INLINE v8f exp_nonpos(v8f x) {
  const v8f zero = {};
  const v8f xc = x < -87.0f ? zero - 87.0f : x;
  const v8f n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  const v8f r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  v8f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const v8f e = p * r * r + r + 1.0f;
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;  // 2^n
  v8f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? zero : e * scale;
}

struct RowStats {
  float max = kNegInf;
  int64_t arg = -1;
  double sum = 0.0;  // sum of exp(l - max) over finite entries
  int64_t n_posinf = 0;
};

template <typename scalar_t>
MTP_INLINE void load_chunk(const scalar_t* src, int64_t n, float* buf) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(src[i]);
    buf[i] = v == v ? v : kNegInf;  // NaN -> -inf
  }
}

// n is a multiple of 8 (the caller pads the buffer with -inf).
MTP_INLINE float chunk_max(const float* buf, int64_t n) {
  v8f acc = load8(buf);
  for (int64_t i = 8; i < n; i += 8) {
    const v8f v = load8(buf + i);
    acc = v > acc ? v : acc;
  }
  float m = kNegInf;
  for (int l = 0; l < 8; ++l) m = acc[l] > m ? acc[l] : m;
  return m;
}

MTP_INLINE float chunk_sum_exp(const float* buf, int64_t n, float m) {
  v8f acc = {};
  for (int64_t i = 0; i < n; i += 8) acc += exp_nonpos(load8(buf + i) - m);
  float s = 0.0f;
  for (int l = 0; l < 8; ++l) s += acc[l];
  return s;
}

// Folds one chunk [base, base + n) of a row into the running statistics.
MTP_INLINE void fold_chunk(const float* buf, int64_t n, int64_t base, RowStats& st) {
  const int64_t n8 = (n + 7) / 8 * 8;
  const float cmax = chunk_max(buf, n8);
  if (cmax == kPosInf) {
    for (int64_t i = 0; i < n; ++i) st.n_posinf += buf[i] == kPosInf;
  }
  if (cmax > st.max) {
    int64_t i = 0;
    while (buf[i] != cmax) ++i;  // first index wins ties
    st.arg = base + i;
    if (cmax != kPosInf) st.sum *= std::exp(static_cast<double>(st.max) - cmax);
    st.max = cmax;
  }
  if (st.max != kPosInf && st.max != kNegInf) st.sum += chunk_sum_exp(buf, n8, st.max);
}

template <typename scalar_t>
MTP_INLINE void scan_row_impl(const scalar_t* row, int64_t V, int64_t suppress, int64_t* token, float* confidence) {
  float buf[kChunk];
  RowStats st;
  for (int64_t base = 0; base < V; base += kChunk) {
    const int64_t n = std::min(kChunk, V - base);
    load_chunk(row + base, n, buf);
    for (int64_t i = n; i % 8 != 0; ++i) buf[i] = kNegInf;
    if (suppress >= base && suppress < base + n) buf[suppress - base] = kNegInf;
    fold_chunk(buf, n, base, st);
  }
  if (st.max == kNegInf) {
    *token = (suppress == 0 && V > 1) ? 1 : 0;
    *confidence = 0.0f;
  } else if (st.max == kPosInf) {
    *token = st.arg;
    *confidence = 1.0f / static_cast<float>(st.n_posinf);
  } else {
    *token = st.arg;
    *confidence = static_cast<float>(1.0 / st.sum);
  }
}

#if defined(__x86_64__)
template <typename scalar_t>
__attribute__((target("avx2,fma"))) void scan_row_avx2(const scalar_t* row, int64_t V, int64_t suppress,
                                                        int64_t* token, float* confidence) {
  scan_row_impl(row, V, suppress, token, confidence);
}
#endif

template <typename scalar_t>
void scan_row(const scalar_t* row, int64_t V, int64_t suppress, int64_t* token, float* confidence) {
#if defined(__x86_64__)
  static const bool wide = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (wide) return scan_row_avx2(row, V, suppress, token, confidence);
#endif
  scan_row_impl(row, V, suppress, token, confidence);
}

void check_args(const at::Tensor& logits, const at::Tensor& block_start, const at::Tensor& block_len,
                const at::Tensor& threshold, const c10::optional<at::Tensor>& stop_token_ids) {
  const char* op = "confidence_scan";
  MTP_CHECK_ARG(logits.dim() == 2, op, "logits must be 2-D [R, V], got ", logits.dim(), "-D");
  MTP_CHECK_ARG(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16 ||
                    logits.scalar_type() == at::kHalf,
                op, "logits must be float32, bfloat16 or float16, got ", logits.scalar_type());
  MTP_CHECK_ARG(logits.is_contiguous(), op, "logits must be contiguous");
  MTP_CHECK_ARG(logits.size(1) >= 1, op, "logits must have a vocabulary of at least 1 (V = 0)");
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
    const at::Tensor& threshold, const c10::optional<at::Tensor>& stop_token_ids, int64_t suppress_token_id) {
  check_args(logits, block_start, block_len, threshold, stop_token_ids);
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
