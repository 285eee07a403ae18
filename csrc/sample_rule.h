// Counter-based sampling noise of sample_scan, shared by the CPU and CUDA kernels and
// defined bit for bit by sglang_mtp/sampling.py (noise_uniform).
//
// Row r samples the token at absolute sequence position pos with the request's seed; token
// id i gets the uniform u(seed, pos, i) in (0, 1) and the Gumbel key z_i - log(-log u), where
// z = logits * inv_temperature. The sampled token is the key's argmax (Gumbel-max: an exact
// sample of softmax(z)). The noise depends on (seed, pos, i) only, never on the batch, so a
// request samples the same tokens alone or in any batch.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define MTP_NOISE_HD __host__ __device__ __forceinline__
#else
#define MTP_NOISE_HD inline
#endif

namespace sglang_mtp {
namespace noise {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kGolden2 = 0xC2B2AE3D27D4EB4Full;
// Keys of entries below max(z) - kWindow never win: every Gumbel value lies in
// [-log(-log(2^-24)), -log(-log(1 - 2^-24))] = [-2.82, 16.64], a span under 20.
constexpr float kWindow = 21.0f;

// MurmurHash3's 64-bit finaliser.
MTP_NOISE_HD uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDull;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ull;
  x ^= x >> 33;
  return x;
}

// The per-row part of the hash (seed, position).
MTP_NOISE_HD uint64_t row_key(int64_t seed, int64_t pos) {
  return mix((uint64_t)seed + kGolden * (uint64_t)pos);
}

// u in (0, 1): an odd multiple of 2^-24, exact in float32.
MTP_NOISE_HD float uniform(uint64_t row, int64_t token) {
  const uint64_t h = mix(row + kGolden2 * ((uint64_t)token + 1));
  return (float)(2 * (h >> 41) + 1) * 5.9604644775390625e-08f;  // 2^-24
}

}  // namespace noise
}  // namespace sglang_mtp
