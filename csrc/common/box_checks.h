#pragma once
// Input checks and argument preparation of grid_anchors, decode_boxes and encode_boxes, shared
// by the CPU and CUDA entry points so that both raise the same messages (host only).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <vector>

#include "common/box_math.h"
#include "common/checks.h"

namespace maskrcnn_fast {

// Validates grid_anchors' arguments and lays the levels out in the flat output.
inline AnchorLayout check_grid_anchors(const at::Tensor& cell_anchors,
                                       at::IntArrayRef num_cell_anchors,
                                       at::IntArrayRef grid_sizes, at::IntArrayRef strides) {
  check_floating(cell_anchors, "cell_anchors");
  check_dim(cell_anchors, 2, "cell_anchors", "Tensor[sum(num_cell_anchors), 4]");
  check_last_dim(cell_anchors, 4, "cell_anchors", "Tensor[sum(num_cell_anchors), 4]");
  const int64_t levels = static_cast<int64_t>(num_cell_anchors.size());
  TORCH_CHECK(levels >= 1 && levels <= kMaxAnchorLevels,
              "num_cell_anchors must have between 1 and ", kMaxAnchorLevels,
              " entries (one per level), got ", levels);
  TORCH_CHECK(static_cast<int64_t>(grid_sizes.size()) == 2 * levels,
              "grid_sizes must hold one (height, width) pair per level (", 2 * levels,
              " values), got ", grid_sizes.size());
  TORCH_CHECK(static_cast<int64_t>(strides.size()) == 2 * levels,
              "strides must hold one (height, width) pair per level (", 2 * levels,
              " values), got ", strides.size());
  AnchorLayout layout{};
  layout.num_levels = static_cast<int>(levels);
  int64_t begin = 0, cell_begin = 0;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t a = num_cell_anchors[l];
    const int64_t gh = grid_sizes[2 * l], gw = grid_sizes[2 * l + 1];
    const int64_t sh = strides[2 * l], sw = strides[2 * l + 1];
    TORCH_CHECK(a >= 0, "num_cell_anchors must be non-negative, got ", num_cell_anchors);
    TORCH_CHECK(gh >= 0 && gw >= 0, "grid_sizes must be non-negative, got ", grid_sizes);
    TORCH_CHECK(sh >= 0 && sw >= 0, "strides must be non-negative, got ", strides);
    AnchorLevel& lv = layout.level[l];
    lv.begin = begin;
    lv.grid_w = gw > 0 ? gw : 1;  // a divisor in the CUDA index math; empty levels skip it
    lv.num_cell = a > 0 ? a : 1;
    lv.cell_begin = cell_begin;
    lv.stride_h = sh;
    lv.stride_w = sw;
    begin += gh * gw * a;
    cell_begin += a;
  }
  TORCH_CHECK(cell_anchors.size(0) == cell_begin,
              "cell_anchors must be Tensor[sum(num_cell_anchors), 4] = Tensor[", cell_begin,
              ", 4], got a tensor of shape ", cell_anchors.sizes());
  layout.total = begin;
  return layout;
}

inline void check_weights(at::ArrayRef<double> weights, const char* name) {
  TORCH_CHECK(weights.size() == 4, name, " must hold 4 values (wx, wy, ww, wh), got ",
              weights.size());
}

inline void check_box_pair(const at::Tensor& a, const char* name_a, const char* shape_a,
                           const at::Tensor& b, const char* name_b) {
  check_floating(a, name_a);
  check_floating(b, name_b);
  check_same_device(a, name_a, b, name_b);
  check_dim(a, 2, name_a, shape_a);
  check_dim(b, 2, name_b, "Tensor[K, 4]");
  check_last_dim(b, 4, name_b, "Tensor[K, 4]");
  TORCH_CHECK(a.size(0) == b.size(0), name_a, " and ", name_b,
              " must have the same number of rows K, got ", a.sizes(), " and ", b.sizes());
}

inline void check_decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes,
                               at::ArrayRef<double> weights,
                               at::OptionalIntArrayRef image_size) {
  check_box_pair(rel_codes, "rel_codes", "Tensor[K, 4 * C]", boxes, "boxes");
  TORCH_CHECK(rel_codes.size(1) % 4 == 0,
              "rel_codes must be Tensor[K, 4 * C] (last dim a multiple of 4), got a tensor of "
              "shape ", rel_codes.sizes());
  check_weights(weights, "weights");
  if (image_size.has_value()) {
    const auto s = *image_size;
    TORCH_CHECK(s.size() == 2, "image_size must be (height, width), got ", s);
    TORCH_CHECK(s[0] >= 0 && s[1] >= 0, "image_size must be non-negative, got ", s);
  }
}

inline void check_encode_boxes(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                               at::ArrayRef<double> weights) {
  check_box_pair(reference_boxes, "reference_boxes", "Tensor[K, 4]", proposals, "proposals");
  check_last_dim(reference_boxes, 4, "reference_boxes", "Tensor[K, 4]");
  check_weights(weights, "weights");
}

// decode_boxes' parameters in the accumulation type, rounded as torch rounds Python scalars:
// a divisor goes straight to the op math type, a clamp bound to the tensor's dtype first.
template <typename scalar_t, typename acc_t>
DecodeParams<acc_t> make_decode_params(at::ArrayRef<double> weights, double bbox_xform_clip,
                                       at::OptionalIntArrayRef image_size) {
  auto r = [](double v) { return static_cast<acc_t>(static_cast<scalar_t>(v)); };
  DecodeParams<acc_t> p;
  p.wx = static_cast<acc_t>(weights[0]);
  p.wy = static_cast<acc_t>(weights[1]);
  p.ww = static_cast<acc_t>(weights[2]);
  p.wh = static_cast<acc_t>(weights[3]);
  p.xform_clip = r(bbox_xform_clip);
  p.clip = image_size.has_value();
  p.lo = acc_t(0);
  p.img_h = p.clip ? r(static_cast<double>((*image_size)[0])) : acc_t(0);
  p.img_w = p.clip ? r(static_cast<double>((*image_size)[1])) : acc_t(0);
  return p;
}

// encode_boxes' weights: torchvision makes them a tensor of reference_boxes' dtype, which then
// takes part in arithmetic of the promoted dtype.
inline std::vector<double> round_weights_to(at::ArrayRef<double> weights, at::ScalarType dtype) {
  std::vector<double> out(weights.begin(), weights.end());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "round_weights", [&] {
    for (auto& w : out) w = static_cast<double>(static_cast<scalar_t>(w));
  });
  return out;
}

}  // namespace maskrcnn_fast
