// The ConfAdapt accept length of one block, shared by the CPU and CUDA kernels of
// confidence_scan and sample_scan (plain-torch definition: sglang_mtp/ops/reference.py).
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define MTP_ACCEPT_HD __host__ __device__ __forceinline__
#else
#define MTP_ACCEPT_HD inline
#endif

namespace sglang_mtp {

// Rows start .. start+len-1 of one block: the leading run with confidence >= tau (at least
// one row, at most len), cut just after the first stop token among the accepted rows.
// A block outside [0, R) or with len <= 0 gets 0 (the CPU ops reject those before; a CUDA
// kernel cannot raise, so it must not read out of bounds either).
MTP_ACCEPT_HD int32_t accept_length(const int64_t* tokens, const float* conf, int64_t start, int64_t len,
                                    float tau, const int64_t* stops, int64_t S, int64_t R) {
  if (start < 0 || len <= 0 || start + len > R) return 0;
  int64_t run = 0;
  while (run < len && conf[start + run] >= tau) ++run;
  const int64_t accepted = run < 1 ? 1 : run;
  for (int64_t j = 0; j < accepted; ++j)
    for (int64_t s = 0; s < S; ++s)
      if (tokens[start + j] == stops[s]) return (int32_t)(j + 1);
  return (int32_t)accepted;
}

}  // namespace sglang_mtp
