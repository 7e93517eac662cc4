// Every schema of torch.ops.maskrcnn_fast, in one place. Kernels register per backend in
// csrc/cpu/<op>_kernel.cpp and csrc/cuda/<op>_kernel.cu; fake kernels and autograd in
// maskrcnn_fast/ops/<op>.py.
#include <Python.h>
#include <torch/library.h>

// A module init so that `import maskrcnn_fast._C` loads the library and runs the static
// registrations below; the ops themselves are reached through torch.ops.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(maskrcnn_fast, m) {
  // ---- section: anchors, box coder -------------------------------------------------

  // ---- end section: anchors, box coder ---------------------------------------------
  //
  //
  //
  // ---- section: nms ----------------------------------------------------------------
  // Indices (int64) of the kept boxes, in descending score order; the size depends on the data.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // Boxes of different idxs never suppress each other; one segmented pass, no offset trick.
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");

  // ---- end section: nms ------------------------------------------------------------
  //
  //
  //
  // ---- section: roi_align ----------------------------------------------------------

  // ---- end section: roi_align ------------------------------------------------------
  //
  //
  //
  // ---- section: multilevel_roi_align -----------------------------------------------

  // ---- end section: multilevel_roi_align -------------------------------------------
}
