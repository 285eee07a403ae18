// The CPU row scan behind confidence_scan: argmax and top-1 softmax probability of one logits
// row in one pass over memory (per L1-resident chunk: a max pass, then a sum-of-exp pass).
//
// Written with GCC/Clang vector extensions and compiled three times: AVX-512 (16 lanes),
// AVX2+FMA (8 lanes) and the baseline ISA; scan_row() picks one at run time.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <limits>
#include <type_traits>

namespace sglang_mtp {
namespace row_scan {

#define MTP_INLINE inline __attribute__((always_inline))
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

constexpr int64_t kChunk = 2048;  // floats per chunk; a multiple of 4 vectors of every width
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

template <typename VF>
MTP_INLINE VF load(const float* p) {
  VF v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// exp(x) for x <= 0 without a libm call (Cody-Waite range reduction, Cephes' degree-6
// polynomial; ~2 ulp). x below -87 and NaN give exactly 0.
#define MTP_DEFINE_EXP(VF, VI)                                                            \
  MTP_INLINE VF exp_nonpos(VF x) {                                                        \
    const VF zero = {};                                                                   \
    const VF xc = x < -87.0f ? zero - 87.0f : x;                                          \
    const VF n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round */     \
    const VF r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;                            \
    VF p = r * 1.9875691500e-4f + 1.3981999507e-3f;                                       \
    p = p * r + 8.3334519073e-3f;                                                         \
    p = p * r + 4.1665795894e-2f;                                                         \
    p = p * r + 1.6666665459e-1f;                                                         \
    p = p * r + 5.0000001201e-1f;                                                         \
    const VF e = p * r * r + r + 1.0f;                                                    \
    const VI bits = (__builtin_convertvector(n, VI) + 127) << 23; /* 2^n */               \
    VF scale;                                                                             \
    std::memcpy(&scale, &bits, sizeof(scale));                                            \
    return x >= -87.0f ? e * scale : zero;                                                \
  }
MTP_DEFINE_EXP(v8f, v8i)
MTP_DEFINE_EXP(v16f, v16i)

// Max of n floats (n a multiple of 4 vectors). NaN never wins a comparison, so it is skipped.
template <typename VF>
MTP_INLINE float chunk_max(const float* x, int64_t n) {
  constexpr int L = sizeof(VF) / sizeof(float);
  const VF ninf = VF{} + kNegInf;
  VF a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;  // four chains hide the compare latency
  for (int64_t i = 0; i < n; i += 4 * L) {
    VF v = load<VF>(x + i);
    a0 = v > a0 ? v : a0;
    v = load<VF>(x + i + L);
    a1 = v > a1 ? v : a1;
    v = load<VF>(x + i + 2 * L);
    a2 = v > a2 ? v : a2;
    v = load<VF>(x + i + 3 * L);
    a3 = v > a3 ? v : a3;
  }
  a0 = a1 > a0 ? a1 : a0;
  a2 = a3 > a2 ? a3 : a2;
  a0 = a2 > a0 ? a2 : a0;
  float m = kNegInf;
  for (int l = 0; l < L; ++l) m = a0[l] > m ? a0[l] : m;
  return m;
}

// Sum of exp(x - m) over n floats (n a multiple of 4 vectors); -inf and NaN add 0.
template <typename VF>
MTP_INLINE float chunk_sum_exp(const float* x, int64_t n, float m) {
  constexpr int L = sizeof(VF) / sizeof(float);
  VF s0 = {}, s1 = {}, s2 = {}, s3 = {};
  for (int64_t i = 0; i < n; i += 4 * L) {
    s0 += exp_nonpos(load<VF>(x + i) - m);
    s1 += exp_nonpos(load<VF>(x + i + L) - m);
    s2 += exp_nonpos(load<VF>(x + i + 2 * L) - m);
    s3 += exp_nonpos(load<VF>(x + i + 3 * L) - m);
  }
  s0 += s1 + s2 + s3;
  float s = 0.0f;
  for (int l = 0; l < L; ++l) s += s0[l];
  return s;
}

struct RowStats {
  float max = kNegInf;
  int64_t arg = -1;
  double sum = 0.0;  // sum of exp(l - max) over the entries seen
  int64_t n_posinf = 0;
};

// Folds the chunk x[0, n) (padded with -inf up to n_pad) starting at column `base`.
template <typename VF>
MTP_INLINE void fold_chunk(const float* x, int64_t n, int64_t n_pad, int64_t base, RowStats& st) {
  const float cmax = chunk_max<VF>(x, n_pad);
  if (cmax == kPosInf)
    for (int64_t i = 0; i < n; ++i) st.n_posinf += x[i] == kPosInf;
  if (cmax > st.max) {
    int64_t i = 0;
    while (x[i] != cmax) ++i;  // the first maximal index wins ties
    st.arg = base + i;
    if (cmax != kPosInf) st.sum *= std::exp(static_cast<double>(st.max) - cmax);
    st.max = cmax;
  }
  if (st.max != kPosInf && st.max != kNegInf) st.sum += chunk_sum_exp<VF>(x, n_pad, st.max);
}

template <typename T>
MTP_INLINE float to_float(T v) {
  return static_cast<float>(v);
}
template <>
MTP_INLINE float to_float(c10::BFloat16 v) {  // the bit shift vectorizes, c10's conversion may not
  uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <typename VF, typename T>
MTP_INLINE void scan_row_impl(const T* row, int64_t V, int64_t suppress, int64_t* token, float* confidence) {
  constexpr int64_t kGroup = 4 * sizeof(VF) / sizeof(float);
  alignas(64) float buf[kChunk];
  RowStats st;
  for (int64_t base = 0; base < V; base += kChunk) {
    const int64_t n = std::min(kChunk, V - base);
    const int64_t n_pad = (n + kGroup - 1) / kGroup * kGroup;
    const bool has_suppressed = suppress >= base && suppress < base + n;
    const float* x = reinterpret_cast<const float*>(row + base);
    if (!std::is_same<T, float>::value || has_suppressed || n != n_pad) {  // stage in the buffer
      for (int64_t i = 0; i < n; ++i) buf[i] = to_float(row[base + i]);
      for (int64_t i = n; i < n_pad; ++i) buf[i] = kNegInf;
      if (has_suppressed) buf[suppress - base] = kNegInf;
      x = buf;
    }
    fold_chunk<VF>(x, n, n_pad, base, st);
  }
  if (st.max == kNegInf) {  // nothing but -inf / NaN / the suppressed id
    *token = (suppress == 0 && V > 1) ? 1 : 0;
    *confidence = 0.0f;
  } else {
    *token = st.arg;
    *confidence = st.max == kPosInf ? 1.0f / static_cast<float>(st.n_posinf) : static_cast<float>(1.0 / st.sum);
  }
}

#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"))) void scan_row_avx512(
    const T* row, int64_t V, int64_t suppress, int64_t* token, float* confidence) {
  scan_row_impl<v16f>(row, V, suppress, token, confidence);
}
template <typename T>
__attribute__((target("avx2,fma"))) void scan_row_avx2(const T* row, int64_t V, int64_t suppress, int64_t* token,
                                                        float* confidence) {
  scan_row_impl<v8f>(row, V, suppress, token, confidence);
}
#endif

// Top-1 token and probability of one row of V logits. NaN and the suppressed id count as -inf.
template <typename T>
void scan_row(const T* row, int64_t V, int64_t suppress, int64_t* token, float* confidence) {
#if defined(__x86_64__)
  static const int isa = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
                             ? 2
                             : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0);
  if (isa == 2) return scan_row_avx512(row, V, suppress, token, confidence);
  if (isa == 1) return scan_row_avx2(row, V, suppress, token, confidence);
#endif
  scan_row_impl<v8f>(row, V, suppress, token, confidence);
}

}  // namespace row_scan
}  // namespace sglang_mtp
