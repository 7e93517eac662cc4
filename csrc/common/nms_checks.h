#pragma once
// Input checks of nms and batched_nms, called by both the CPU and the CUDA entry points so
// that both raise the same message.
#include <cmath>

#include "common/checks.h"

namespace maskrcnn_fast {

inline void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores,
                             double iou_threshold) {
  check_dim(boxes, 2, "boxes", "Tensor[N, 4]");
  check_last_dim(boxes, 4, "boxes", "Tensor[N, 4]");
  check_dim(scores, 1, "scores", "Tensor[N]");
  check_floating(boxes, "boxes");
  check_floating(scores, "scores");
  check_same_dtype(boxes, "boxes", scores, "scores");
  check_same_device(boxes, "boxes", scores, "scores");
  TORCH_CHECK(boxes.size(0) == scores.size(0),
              "boxes and scores must hold the same number of boxes, got boxes of shape ",
              boxes.sizes(), " and scores of shape ", scores.sizes());
  TORCH_CHECK(boxes.size(0) <= static_cast<int64_t>(INT32_MAX),
              "boxes: at most 2^31 - 1 boxes are supported, got ", boxes.size(0));
  // NaN fails this test too.
  TORCH_CHECK(iou_threshold >= 0.0, "iou_threshold must be >= 0, got ", iou_threshold);
}

inline void check_batched_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores,
                                     const at::Tensor& idxs, double iou_threshold) {
  check_nms_inputs(boxes, scores, iou_threshold);
  check_dim(idxs, 1, "idxs", "Tensor[N]");
  TORCH_CHECK(at::isIntegralType(idxs.scalar_type(), /*includeBool=*/false),
              "idxs must be an integer tensor (category of each box), got ", idxs.scalar_type());
  check_same_device(boxes, "boxes", idxs, "idxs");
  TORCH_CHECK(idxs.size(0) == boxes.size(0),
              "boxes and idxs must hold the same number of boxes, got boxes of shape ",
              boxes.sizes(), " and idxs of shape ", idxs.sizes());
}

}  // namespace maskrcnn_fast
