#pragma once
// Input checks and argument preparation of decode_boxes and encode_boxes, shared by the CPU and
// CUDA entry points so that both raise the same messages (host only); detection_postprocess
// checks and rounds its box-coder arguments with the same functions.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <vector>

#include "common/box_coder_math.h"
#include "common/checks.h"

namespace maskrcnn_fast {

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
