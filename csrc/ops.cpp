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
  // One launch over the ROIs of every level: rois [K, 5] (batch index, x1, y1, x2, y2); each
  // ROI picks its FPN level (k_min/k_max from the scales) inside the kernel.
  m.def(
      "multilevel_roi_align(Tensor[] features, Tensor rois, float[] scales, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned, int canonical_scale, "
      "int canonical_level, float eps) -> Tensor");
  // One gradient per level, Tensor[batch_size, channels, heights[l], widths[l]].
  m.def(
      "_multilevel_roi_align_backward(Tensor grad, Tensor rois, float[] scales, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned, "
      "int canonical_scale, int canonical_level, float eps, SymInt batch_size, SymInt channels, "
      "SymInt[] heights, SymInt[] widths) -> Tensor[]");

  // ---- end section: multilevel_roi_align -------------------------------------------
}
