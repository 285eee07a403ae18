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
  // req_to_token int32 [P, C] (written in place); req_pool_indices, seq_lens int64 [B];
  // cache_loc int64 [B, W]; keep int32 [B] -> new_seq_lens int64 [B], released int64 [B*W],
  // num_released int64 []
  m.def(
      "kv_commit(Tensor(a!) req_to_token, Tensor req_pool_indices, Tensor seq_lens, "
      "Tensor cache_loc, Tensor keep) -> (Tensor, Tensor, Tensor)");
}
