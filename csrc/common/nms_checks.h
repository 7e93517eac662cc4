#pragma once
// Input checks of nms and batched_nms, called by both the CPU and the CUDA entry points so
// that both raise the same message.
#include <cmath>

#include "common/checks.h"

namespace maskrcnn_fast {

constexpr int64_t kMaxNmsBoxes = int64_t(1) << 30;

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
  // The CUDA kernels index boxes in int32, and [2, n] flag arrays (2n < 2^31): 2^30 boxes.
  TORCH_CHECK(boxes.size(0) <= kMaxNmsBoxes,
              "boxes: at most 2^30 boxes are supported, got ", boxes.size(0));
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
