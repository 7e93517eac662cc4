#pragma once
// Input checks of detection_postprocess, shared by the CPU and CUDA entry points (host only).
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "common/box_coder_checks.h"
#include "common/checks.h"

namespace maskrcnn_fast {

struct DetectionShape {
  int64_t num_images, num_proposals, num_classes;  // N, P, C
};

inline DetectionShape check_detection_postprocess(
    const at::Tensor& class_logits, const at::Tensor& box_regression, const at::Tensor& proposals,
    const c10::optional<at::Tensor>& proposal_counts, const at::Tensor& image_sizes,
    at::ArrayRef<double> weights, double bbox_xform_clip, double score_thresh, double nms_thresh,
    int64_t detections_per_img) {
  check_dim(class_logits, 2, "class_logits", "Tensor[N * P, C]");
  check_floating(class_logits, "class_logits");
  check_dim(box_regression, 2, "box_regression", "Tensor[N * P, 4 * C]");
  check_same_dtype(class_logits, "class_logits", box_regression, "box_regression");
  check_same_device(class_logits, "class_logits", box_regression, "box_regression");
  check_dim(proposals, 3, "proposals", "Tensor[N, P, 4]");
  check_last_dim(proposals, 4, "proposals", "Tensor[N, P, 4]");
  check_floating(proposals, "proposals");
  check_same_device(class_logits, "class_logits", proposals, "proposals");
  check_dim(image_sizes, 2, "image_sizes", "Tensor[N, 2] (height, width)");
  check_last_dim(image_sizes, 2, "image_sizes", "Tensor[N, 2] (height, width)");
  TORCH_CHECK(at::isIntegralType(image_sizes.scalar_type(), /*includeBool=*/false),
              "image_sizes must be an integer tensor, got ", image_sizes.scalar_type());
  check_same_device(class_logits, "class_logits", image_sizes, "image_sizes");
  DetectionShape s{proposals.size(0), proposals.size(1), class_logits.size(1)};
  TORCH_CHECK(s.num_classes >= 1, "class_logits must have at least one class, got ",
              class_logits.sizes());
  TORCH_CHECK(class_logits.size(0) == s.num_images * s.num_proposals,
              "class_logits must be Tensor[N * P, C] with N * P = ", s.num_images * s.num_proposals,
              " (proposals ", proposals.sizes(), "), got ", class_logits.sizes());
  TORCH_CHECK(box_regression.size(0) == class_logits.size(0) &&
                  box_regression.size(1) == 4 * s.num_classes,
              "box_regression must be Tensor[N * P, 4 * C] = [", class_logits.size(0), ", ",
              4 * s.num_classes, "], got ", box_regression.sizes());
  TORCH_CHECK(image_sizes.size(0) == s.num_images, "image_sizes must hold one row per image (",
              s.num_images, "), got ", image_sizes.sizes());
  if (proposal_counts.has_value()) {
    const at::Tensor& pc = *proposal_counts;
    check_dim(pc, 1, "proposal_counts", "Tensor[N]");
    TORCH_CHECK(at::isIntegralType(pc.scalar_type(), /*includeBool=*/false),
                "proposal_counts must be an integer tensor, got ", pc.scalar_type());
    TORCH_CHECK(pc.size(0) == s.num_images, "proposal_counts must hold one count per image (",
                s.num_images, "), got ", pc.sizes());
    check_same_device(class_logits, "class_logits", pc, "proposal_counts");
  }
  check_weights(weights, "weights");
  TORCH_CHECK(!std::isnan(bbox_xform_clip), "bbox_xform_clip must not be NaN");
  TORCH_CHECK(!std::isnan(score_thresh), "score_thresh must not be NaN");
  TORCH_CHECK(nms_thresh >= 0.0, "nms_thresh must be >= 0, got ", nms_thresh);
  TORCH_CHECK(detections_per_img >= 0, "detections_per_img must be >= 0, got ",
              detections_per_img);
  TORCH_CHECK(s.num_images * s.num_proposals * s.num_classes <= static_cast<int64_t>(INT32_MAX),
              "class_logits: at most 2^31 - 1 (ROI, class) pairs are supported");
  return s;
}

}  // namespace maskrcnn_fast
