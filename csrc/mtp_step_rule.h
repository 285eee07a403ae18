// The per-request rule of one MTP decode step, shared by the CPU and CUDA kernels of
// step_inputs and accept_commit (csrc/mtp_step.cpp, csrc/cuda/mtp_step.cu). Plain-torch
// definition: sglang_mtp/ops/step_reference.py (on top of sglang_mtp/step.py).
//
// State is indexed by the request's pool row r (SGLang's req_pool_idx); everything else by
// its batch index b. A request's W query rows are b*W .. b*W+W-1. Its pending tokens (KV not
// in the cache yet) are pending[r, 0 .. pending_len-1], the last draft_len of them unverified
// drafts (verify mode); the block of the step starts at the last verified token's row.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define MTP_HD __host__ __device__ __forceinline__
#else
#define MTP_HD inline
#endif

namespace sglang_mtp {
namespace step_rule {

template <typename T>
MTP_HD T min_(T a, T b) { return a < b ? a : b; }
template <typename T>
MTP_HD T max_(T a, T b) { return a > b ? a : b; }
// An index into [0, hi]: inputs the CPU launcher rejects never read out of bounds on a GPU.
MTP_HD int64_t clamp_(int64_t i, int64_t hi) { return min_(max_(i, (int64_t)0), hi); }

// Per-slot state ([P] each; pending [P, Pw]).
struct State {
  int64_t* pending;      // [P, Pw] int64 (written by accept_commit)
  int32_t* pending_len;  // [P] (written)
  int32_t* draft_len;    // [P] (written)
  const int32_t* k;      // [P] block size / k_max
  const float* threshold;  // [P] ConfAdapt tau
  const bool* verify;    // [P]
  bool* first;           // [P] first decode step (written: cleared)
  const int64_t* first_token;  // [P] t1, emitted by the prefill
  const bool* sampled;   // [P] plain decoding through SGLang's sampler
  int64_t Pw;            // pending width
};

// The block size of request r this step: its k capped by the step's k_cap (load-adaptive
// width, sglang_mtp/width.py) and by the width (the block must fit after the pending tokens).
// A first step keeps at least 2 rows: its row 0 re-predicts t1, already emitted by the prefill.
MTP_HD int64_t step_k(const State& s, int64_t r, int64_t W, int64_t k_cap) {
  const int64_t k = s.k[r];
  const int64_t lo = (s.first[r] && k > 1) ? 2 : 1;
  return max_(lo, min_(min_(k, k_cap), W - (int64_t)s.pending_len[r] + 1));
}

struct InputsOut {
  int64_t* input_ids;    // [B, W]
  int64_t* positions;    // [B, W]
  int64_t* attn_seq_lens;  // [B]
  int64_t* out_cache_loc;  // [B, W]
  int32_t* block_start;  // [B]
  int32_t* block_len;    // [B]
  float* block_threshold;  // [B]
};

// The forward's inputs and the scan's block for request b (pool row r, committed KV seq).
// Slots past the table's C columns are clamped (the CPU launcher rejects them before).
MTP_HD void step_inputs_one(int64_t b, int64_t r, int64_t seq, const State& s, const int32_t* req_to_token,
                            int64_t C, int64_t mask, int64_t W, int64_t max_position, int64_t k_cap,
                            const InputsOut& o) {
  const int64_t pl = s.pending_len[r], dl = s.draft_len[r];
  const bool fst = s.first[r], ver = s.verify[r];
  const int64_t seq_in = seq - (fst ? 1 : 0);  // a first step re-runs the last prompt row
  const int32_t* table = req_to_token + r * C;
  for (int64_t j = 0; j < W; ++j) {
    const int64_t slot = seq_in + j;
    o.input_ids[b * W + j] = j < pl ? s.pending[r * s.Pw + clamp_(j, s.Pw - 1)] : mask;
    o.positions[b * W + j] = min_(slot, max_position - 1);
    o.out_cache_loc[b * W + j] = table[clamp_(slot, C - 1)];
  }
  if (fst) o.out_cache_loc[b * W] = table[clamp_(seq + W - 1, C - 1)];  // scratch: keep the prefill's KV
  o.attn_seq_lens[b] = seq_in;
  o.block_start[b] = (int32_t)(b * W + pl - 1 - dl);
  o.block_len[b] = (int32_t)(ver ? dl + 1 : step_k(s, r, W, k_cap));
  o.block_threshold[b] = ver ? 0.0f : s.threshold[r];
}

struct AcceptOut {
  int64_t* emitted;      // [B, W+1]: emitted tokens (0 padded), last column = KV kept beyond committed
  int32_t* emit_len;     // [B]
  int64_t* new_seq_lens; // [B]
  int64_t* last_token;   // [B]
  int64_t* emit_rows;    // [B, W] logits row of each emitted token (for logprobs)
  int64_t* predict;      // [B*W] emitted token at its logits row, else 0
};

// Accept request b's tokens from the scan's argmax rows (tokens [B*W]) and accept length,
// and write its next pending tokens into the state. samples: [B] or null (sampler fallbacks).
MTP_HD void accept_commit_one(int64_t b, int64_t r, int64_t seq, const int64_t* tokens, int32_t scan_len,
                              const int64_t* samples, const State& s, int64_t mask, int64_t W, int64_t k_cap,
                              const AcceptOut& o) {
  const int64_t pl = s.pending_len[r], dl = s.draft_len[r], kk = step_k(s, r, W, k_cap);
  const bool ver = s.verify[r], fst = s.first[r];
  const int64_t base = pl - 1 - dl;  // row of the last verified token
  const int64_t* row = tokens + b * W;
  const bool use_sample = samples != nullptr && s.sampled[r];
  auto tok = [&](int64_t i) -> int64_t {  // argmax of query row i (clamped to the step)
    i = clamp_(i, W - 1);
    return (use_sample && i == base) ? samples[b] : row[i];
  };
  int64_t j = 0;  // verify: leading drafts equal to the argmax of the row before them
  if (ver)
    while (j < dl && j < max_(W - 1, (int64_t)1) && s.pending[r * s.Pw + clamp_(base + 1 + j, s.Pw - 1)] == tok(base + j)) ++j;
  const int64_t e0 = ver ? min_(j + 1, (int64_t)scan_len) : (int64_t)scan_len;
  const int64_t next_len = ver ? 1 + (j == dl ? kk - 1 : 0) : e0;
  const int64_t shift = fst ? 1 : 0;  // a first step's token 0 is t1, emitted by the prefill
  const int64_t emit_len = e0 - shift, keep = pl - dl + j;
  int64_t* em = o.emitted + b * (W + 1);
  for (int64_t c = 0; c < W; ++c) em[c] = c < emit_len ? tok(base + c + shift) : 0;
  em[W] = keep - shift;
  o.emit_len[b] = (int32_t)emit_len;
  o.new_seq_lens[b] = seq + keep;
  o.last_token[b] = em[max_(emit_len - 1, (int64_t)0)];
  const int64_t base2 = base + shift;
  for (int64_t c = 0; c < W; ++c) {
    o.emit_rows[b * W + c] = b * W + clamp_(base2 + c, W - 1);
    const int64_t rel = c - base2;
    o.predict[b * W + c] = (rel >= 0 && rel < emit_len) ? em[rel] : 0;
  }
  // Next pending (read everything above before overwriting the state row).
  int64_t* pend = s.pending + r * s.Pw;
  const int64_t n = min_(W, s.Pw);
  for (int64_t e = 0; e < n; ++e) pend[e] = e < next_len ? tok(base + j + e) : mask;
  if (fst) pend[0] = s.first_token[r];
  s.pending_len[r] = (int32_t)next_len;
  s.draft_len[r] = (int32_t)(ver ? next_len - 1 : 0);
  s.first[r] = false;
}

}  // namespace step_rule
}  // namespace sglang_mtp
