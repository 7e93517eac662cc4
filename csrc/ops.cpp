// Defines every op of torch.ops.maskrcnn_fast. The schemas are written once, in
// maskrcnn_fast/_ext/schemas.py (the op registry, with each op's documentation); setup.py
// writes them into the generated include "mf_schemas.inc" (build/generated), so the compiled
// extension and the pure-PyTorch fallback define the same ops. Kernels register per backend in
// csrc/cpu/<op>_kernel.cpp and csrc/cuda/<op>_kernel.cu; fake kernels and autograd in
// maskrcnn_fast/ops/<op>.py.
#include <Python.h>
#include <torch/library.h>

// Built twice: into maskrcnn_fast._C (torch.ops.maskrcnn_fast) and, with MF_EMU, into the
// emulated-CUDA extension maskrcnn_fast._C_emu (torch.ops.maskrcnn_fast_emu, the CUDA kernels
// run on CPU tensors): the same schemas for both.
#ifdef MF_EMU
#define MF_LIBRARY_NAME maskrcnn_fast_emu
#define MF_MODULE_INIT PyInit__C_emu
#define MF_MODULE_NAME "_C_emu"
#else
#define MF_LIBRARY_NAME maskrcnn_fast
#define MF_MODULE_INIT PyInit__C
#define MF_MODULE_NAME "_C"
#endif
// Expands MF_LIBRARY_NAME before TORCH_LIBRARY pastes it.
#define MF_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)

// A module init so that `import maskrcnn_fast._C` loads the library and runs the static
// registrations below; the ops themselves are reached through torch.ops.
extern "C" {
PyObject* MF_MODULE_INIT(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, MF_MODULE_NAME, nullptr, -1,
                                          nullptr};
  return PyModule_Create(&module_def);
}
}

namespace {
// Schema strings, one per op, in the registry's order.
constexpr const char* kSchemas[] = {
#include "mf_schemas.inc"
};
}  // namespace

MF_TORCH_LIBRARY(MF_LIBRARY_NAME, m) {
  for (const char* schema : kSchemas) m.def(schema);
}
