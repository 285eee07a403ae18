// The sglang_mtp operator library: the one place the schemas are declared.
// CPU kernels live in csrc/<op>.cpp, CUDA kernels in csrc/cuda/<op>.cu; each registers
// itself under its dispatch key, so Python never chooses a device itself.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import sglang_mtp._C` loads this shared object, which runs the static registrations
// below; the module itself is empty.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(sglang_mtp, m) {
  // logits [R, V]; block_start, block_len int32 [B]; threshold float32 [B];
  // stop_token_ids int64 [S] or None -> tokens int64 [R], confidence float32 [R], accept_len int32 [B]
  m.def(
      "confidence_scan(Tensor logits, Tensor block_start, Tensor block_len, Tensor threshold, "
      "Tensor? stop_token_ids, int suppress_token_id) -> (Tensor, Tensor, Tensor)");
  // confidence_scan where rows with inv_temperature > 0 sample (Gumbel-max with counter-based
  // noise keyed by seed and position, csrc/sample_rule.h): inv_temperature float32 [R],
  // seed, position int64 [R] -> tokens int64 [R], confidence float32 [R], accept_len int32 [B]
  m.def(
      "sample_scan(Tensor logits, Tensor block_start, Tensor block_len, Tensor threshold, "
      "Tensor? stop_token_ids, int suppress_token_id, Tensor inv_temperature, Tensor seed, Tensor position) "
      "-> (Tensor, Tensor, Tensor)");
  // One MTP decode step = step_inputs -> forward -> confidence_scan -> accept_commit.
  // State [P]: pending int64 [P, Pw], pending_len/draft_len/k int32, threshold float32,
  // verify/first bool; rows, seq_lens int64 [B]; req_to_token int32 [P', C]
  // k_cap: the step's cap on every block (load-adaptive width; >= k_max = no cap)
  // -> input_ids, positions, out_cache_loc int64 [B, W]; attn_seq_lens int64 [B];
  //    block_start, block_len int32 [B]; block_threshold float32 [B]
  m.def(
      "step_inputs(Tensor pending, Tensor pending_len, Tensor draft_len, Tensor k, Tensor threshold, "
      "Tensor verify, Tensor first, Tensor rows, Tensor seq_lens, Tensor req_to_token, int mask_token_id, "
      "int width, int max_position, int k_cap) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // tokens int64 [B*W] and accept_len int32 [B] from confidence_scan; rows, seq_lens (the
  // step's attn_seq_lens) int64 [B]; state as above (pending, pending_len, draft_len, first
  // written in place), first_token int64 [P], sampled bool [P]; samples int64 [B] or None
  // -> emitted int64 [B, W+1], emit_len int32 [B], new_seq_lens int64 [B], last_token int64 [B],
  //    emit_rows int64 [B, W], predict int64 [B*W]
  m.def(
      "accept_commit(Tensor tokens, Tensor accept_len, Tensor rows, Tensor seq_lens, Tensor(a!) pending, "
      "Tensor(b!) pending_len, Tensor(c!) draft_len, Tensor k, Tensor verify, Tensor(d!) first, "
      "Tensor first_token, Tensor sampled, Tensor? samples, int mask_token_id, int width, int k_cap) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
