#pragma once
// Input checks of box_iou, called by both the CPU and the CUDA entry points so that both raise
// the same messages (host only).
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "common/checks.h"

namespace maskrcnn_fast {

inline void check_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_floating(boxes1, "boxes1");
  check_floating(boxes2, "boxes2");
  check_dim(boxes1, 2, "boxes1", "Tensor[M, 4]");
  check_last_dim(boxes1, 4, "boxes1", "Tensor[M, 4]");
  check_dim(boxes2, 2, "boxes2", "Tensor[N, 4]");
  check_last_dim(boxes2, 4, "boxes2", "Tensor[N, 4]");
  check_same_dtype(boxes1, "boxes1", boxes2, "boxes2");
  check_same_device(boxes1, "boxes1", boxes2, "boxes2");
}

}  // namespace maskrcnn_fast
