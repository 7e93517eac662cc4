#pragma once
// Input checks and layout of rpn_proposals, shared by the CPU and CUDA entry points (host only).
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "common/checks.h"
#include "common/rpn_proposals_math.h"

namespace maskrcnn_fast {

inline RpnLayout check_rpn_proposals(at::TensorList objectness, at::TensorList deltas,
                                     at::TensorList cell_anchors, at::IntArrayRef strides,
                                     const at::Tensor& image_sizes, int64_t pre_nms_top_n,
                                     int64_t post_nms_top_n, double nms_thresh, double min_size,
                                     double score_thresh) {
  const int64_t levels = static_cast<int64_t>(objectness.size());
  TORCH_CHECK(levels >= 1 && levels <= kMaxAnchorLevels, "objectness must hold between 1 and ",
              kMaxAnchorLevels, " levels, got ", levels);
  TORCH_CHECK(static_cast<int64_t>(deltas.size()) == levels,
              "pred_bbox_deltas must hold one tensor per level (", levels, "), got ",
              deltas.size());
  TORCH_CHECK(static_cast<int64_t>(cell_anchors.size()) == levels,
              "cell_anchors must hold one tensor per level (", levels, "), got ",
              cell_anchors.size());
  TORCH_CHECK(static_cast<int64_t>(strides.size()) == 2 * levels,
              "strides must hold one (height, width) pair per level (", 2 * levels,
              " values), got ", strides.size());
  check_dim(image_sizes, 2, "image_sizes", "Tensor[N, 2] (height, width)");
  check_last_dim(image_sizes, 2, "image_sizes", "Tensor[N, 2] (height, width)");
  TORCH_CHECK(at::isIntegralType(image_sizes.scalar_type(), /*includeBool=*/false),
              "image_sizes must be an integer tensor, got ", image_sizes.scalar_type());
  TORCH_CHECK(pre_nms_top_n >= 0, "pre_nms_top_n must be >= 0, got ", pre_nms_top_n);
  TORCH_CHECK(post_nms_top_n >= 0, "post_nms_top_n must be >= 0, got ", post_nms_top_n);
  TORCH_CHECK(nms_thresh >= 0.0, "nms_thresh must be >= 0, got ", nms_thresh);
  TORCH_CHECK(min_size >= 0.0, "min_size must be >= 0, got ", min_size);
  TORCH_CHECK(!std::isnan(score_thresh), "score_thresh must not be NaN");

  RpnLayout layout{};
  layout.num_levels = static_cast<int>(levels);
  layout.num_images = image_sizes.size(0);
  int64_t begin = 0;
  for (int64_t l = 0; l < levels; ++l) {
    const at::Tensor& ob = objectness[l];
    const at::Tensor& de = deltas[l];
    const at::Tensor& ca = cell_anchors[l];
    check_dim(ob, 4, "objectness", "a list of Tensor[N, A, H, W]");
    check_dim(de, 4, "pred_bbox_deltas", "a list of Tensor[N, 4 * A, H, W]");
    check_dim(ca, 2, "cell_anchors", "a list of Tensor[A, 4]");
    check_last_dim(ca, 4, "cell_anchors", "a list of Tensor[A, 4]");
    check_floating(ob, "objectness");
    check_floating(ca, "cell_anchors");
    check_same_dtype(ob, "objectness", de, "pred_bbox_deltas");
    check_same_device(ob, "objectness", de, "pred_bbox_deltas");
    check_same_device(ob, "objectness", ca, "cell_anchors");
    check_same_device(ob, "objectness", image_sizes, "image_sizes");
    check_same_dtype(ob, "objectness", objectness[0], "objectness[0]");
    const int64_t n = ob.size(0), a = ob.size(1), h = ob.size(2), w = ob.size(3);
    TORCH_CHECK(n == layout.num_images, "objectness[", l, "] must hold one map per image (",
                layout.num_images, " in image_sizes), got shape ", ob.sizes());
    TORCH_CHECK(de.size(0) == n && de.size(1) == 4 * a && de.size(2) == h && de.size(3) == w,
                "pred_bbox_deltas[", l, "] must be Tensor[N, 4 * A, H, W] = [", n, ", ", 4 * a,
                ", ", h, ", ", w, "] to match objectness, got ", de.sizes());
    TORCH_CHECK(ca.size(0) == a, "cell_anchors[", l, "] must hold A = ", a,
                " anchors (objectness' dim 1), got shape ", ca.sizes());
    const int64_t sh = strides[2 * l], sw = strides[2 * l + 1];
    TORCH_CHECK(sh >= 0 && sw >= 0, "strides must be non-negative, got ", strides);
    TORCH_CHECK(a * h * w <= static_cast<int64_t>(INT32_MAX),
                "objectness: at most 2^31 - 1 anchors per level are supported");
    RpnLevel& lv = layout.level[l];
    lv.height = h;
    lv.width = w;
    lv.num_anchors = a;
    lv.stride_h = sh;
    lv.stride_w = sw;
    lv.k = std::min(pre_nms_top_n, a * h * w);
    lv.cand_begin = begin;
    begin += lv.k;
  }
  layout.num_candidates = begin;
  return layout;
}

// Thresholds rounded to the input dtype (torch's rule for a Python scalar against a tensor).
template <typename scalar_t, typename acc_t>
RpnFilter<acc_t> make_rpn_filter(double min_size, double score_thresh) {
  RpnFilter<acc_t> f;
  f.min_size = static_cast<acc_t>(static_cast<scalar_t>(min_size));
  f.score_thresh = static_cast<acc_t>(static_cast<scalar_t>(score_thresh));
  return f;
}

}  // namespace maskrcnn_fast
