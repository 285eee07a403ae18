// step_inputs and accept_commit, CPU: one MTP decode step around the model forward,
// one call each whatever the batch size (the per-request rule is csrc/mtp_step_rule.h).
#include <torch/library.h>

#include "checks.h"
#include "mtp_step_io.h"

namespace sglang_mtp {
namespace {

// Value checks need the data; on the CPU that costs no device round trip.
void check_rows(const int64_t* rows, int64_t B, int64_t P, const char* op) {
  for (int64_t b = 0; b < B; ++b)
    MTP_CHECK_ARG(rows[b] >= 0 && rows[b] < P, op, "rows[", b, "] = ", rows[b], " is outside [0, ", P, ")");
}

InputsTuple step_inputs_cpu(
    const at::Tensor& pending, const at::Tensor& pending_len, const at::Tensor& draft_len, const at::Tensor& k,
    const at::Tensor& threshold, const at::Tensor& verify, const at::Tensor& first, const at::Tensor& rows,
    const at::Tensor& seq_lens, const at::Tensor& req_to_token, int64_t mask_token_id, int64_t width,
    int64_t max_position, int64_t k_cap) {
  const char* op = "step_inputs";
  check_step_inputs_args(pending, pending_len, draft_len, k, threshold, verify, first, rows, seq_lens, req_to_token,
                         width, max_position, op);
  check_k_cap(k_cap, op);
  const int64_t B = rows.size(0), W = width, C = req_to_token.size(1);
  const int64_t P = std::min(pending.size(0), req_to_token.size(0));
  const int64_t* rw = rows.data_ptr<int64_t>();
  const int64_t* seq = seq_lens.data_ptr<int64_t>();
  check_rows(rw, B, P, op);
  const int32_t* pl = pending_len.data_ptr<int32_t>();
  const int32_t* dl = draft_len.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t r = rw[b];
    MTP_CHECK_ARG(pl[r] >= 1 && pl[r] <= W && dl[r] >= 0 && dl[r] < pl[r], op, "request ", b,
                  " has pending_len ", pl[r], " and draft_len ", dl[r], ": need 0 <= draft_len < pending_len <= width ",
                  W);
    MTP_CHECK_ARG(seq[b] >= 1 && seq[b] + W <= C, op, "request ", b, ": seq_lens ", seq[b], " + width ", W,
                  " runs past the ", C, " columns of req_to_token");
  }
  auto out = alloc_inputs(B, W, seq_lens);
  const auto s = state_view(pending, pending_len, draft_len, k, threshold, verify, first, {}, {});
  const auto o = inputs_view(out);
  const int32_t* table = req_to_token.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    step_rule::step_inputs_one(b, rw[b], seq[b], s, table, C, mask_token_id, W, max_position, k_cap, o);
  return out;
}

AcceptTuple accept_commit_cpu(
    const at::Tensor& tokens, const at::Tensor& accept_len, const at::Tensor& rows, const at::Tensor& seq_lens,
    at::Tensor& pending, at::Tensor& pending_len, at::Tensor& draft_len, const at::Tensor& k,
    const at::Tensor& verify, at::Tensor& first, const at::Tensor& first_token, const at::Tensor& sampled,
    const std::optional<at::Tensor>& samples, int64_t mask_token_id, int64_t width, int64_t k_cap) {
  const char* op = "accept_commit";
  check_accept_commit_args(tokens, accept_len, rows, seq_lens, pending, pending_len, draft_len, k, verify, first,
                           first_token, sampled, samples, width, op);
  check_k_cap(k_cap, op);
  const int64_t B = rows.size(0), W = width;
  const int64_t* rw = rows.data_ptr<int64_t>();
  check_rows(rw, B, pending.size(0), op);
  const int32_t* acc = accept_len.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    MTP_CHECK_ARG(acc[b] >= 1 && acc[b] <= W, op, "accept_len[", b, "] = ", acc[b], " is outside [1, width = ", W,
                  "]");
  auto out = alloc_accept(B, W, seq_lens);
  const auto s = state_view(pending, pending_len, draft_len, k, {}, verify, first, first_token, sampled);
  const auto o = accept_view(out);
  const int64_t* tok = tokens.data_ptr<int64_t>();
  const int64_t* seq = seq_lens.data_ptr<int64_t>();
  const int64_t* smp = samples.has_value() ? samples->data_ptr<int64_t>() : nullptr;
  for (int64_t b = 0; b < B; ++b)
    step_rule::accept_commit_one(b, rw[b], seq[b], tok, acc[b], smp, s, mask_token_id, W, k_cap, o);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sglang_mtp, CPU, m) {
  m.impl("step_inputs", &step_inputs_cpu);
  m.impl("accept_commit", &accept_commit_cpu);
}

}  // namespace sglang_mtp
