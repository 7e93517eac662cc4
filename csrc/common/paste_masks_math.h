#pragma once
// Mask pasting arithmetic, shared by the CPU and CUDA kernels of paste_masks.
//
// Semantics are torchvision's paste_masks_in_image: each M x M mask is padded by `padding`
// zeros, its box is scaled about its centre by (M + 2 padding) / M and truncated to int64, the
// padded mask is resized to the box's integer size with bilinear interpolation
// (align_corners=False) and written into a zero image, clipped to the image bounds. We never
// build the resized mask: every output pixel samples the small mask directly, with the
// resize's own source-index rule and ATen's order of float operations (x first, then y). ATen's
// CPU kernel is compiled with FMA contraction and ours is not (so that CPU and CUDA agree), so
// float32 results differ from torchvision's by about an ulp (under 1e-6 in our tests).
#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <type_traits>

#include "common/macros.h"

namespace maskrcnn_fast {

// Expanded box coordinates beyond this (or non-finite) make the whole mask zero: torchvision
// could not allocate such a resized mask anyway, and it keeps every int64 below free of
// overflow (box sizes, pixel offsets).
constexpr double kPasteMaxCoord = 1152921504606846976.0;  // 2^60

// The dtype of `boxes`, resolved at run time inside the kernels so that masks and boxes may
// differ in dtype without multiplying the kernel instantiations.
enum class PasteBoxType : int { Float = 0, Double = 1, Half = 2, BFloat16 = 3 };

// The integer box of torchvision's expand_boxes(...).to(int64). Each eager op there rounds to
// the boxes' dtype, so we do the same: compute in opmath, round to box_t after every step.
// The Python float `scale` enters the multiply as opmath (float for float/half/bfloat16).
template <typename box_t>
MF_HOST_DEVICE bool expand_box_to_int(const box_t* b, int64_t stride, double scale,
                                      int64_t out[4]) {
  using acc_t = at::opmath_type<box_t>;
  const acc_t x1 = static_cast<acc_t>(b[0]);
  const acc_t y1 = static_cast<acc_t>(b[stride]);
  const acc_t x2 = static_cast<acc_t>(b[2 * stride]);
  const acc_t y2 = static_cast<acc_t>(b[3 * stride]);
  const acc_t s = static_cast<acc_t>(scale);
  const acc_t half = static_cast<acc_t>(0.5);
  box_t w_half = static_cast<box_t>(static_cast<acc_t>(static_cast<box_t>(x2 - x1)) * half);
  box_t h_half = static_cast<box_t>(static_cast<acc_t>(static_cast<box_t>(y2 - y1)) * half);
  const box_t x_c = static_cast<box_t>(static_cast<acc_t>(static_cast<box_t>(x2 + x1)) * half);
  const box_t y_c = static_cast<box_t>(static_cast<acc_t>(static_cast<box_t>(y2 + y1)) * half);
  w_half = static_cast<box_t>(static_cast<acc_t>(w_half) * s);
  h_half = static_cast<box_t>(static_cast<acc_t>(h_half) * s);
  const acc_t e[4] = {
      static_cast<acc_t>(static_cast<box_t>(static_cast<acc_t>(x_c) - static_cast<acc_t>(w_half))),
      static_cast<acc_t>(static_cast<box_t>(static_cast<acc_t>(y_c) - static_cast<acc_t>(h_half))),
      static_cast<acc_t>(static_cast<box_t>(static_cast<acc_t>(x_c) + static_cast<acc_t>(w_half))),
      static_cast<acc_t>(static_cast<box_t>(static_cast<acc_t>(y_c) + static_cast<acc_t>(h_half))),
  };
  bool ok = true;
  for (int k = 0; k < 4; ++k) {
    // NaN fails both comparisons; +-Inf fails one.
    const bool in_range = e[k] < static_cast<acc_t>(kPasteMaxCoord) &&
                          e[k] > static_cast<acc_t>(-kPasteMaxCoord);
    ok = ok && in_range;
    out[k] = in_range ? static_cast<int64_t>(e[k]) : 0;  // truncation toward zero, as .to(int64)
  }
  return ok;
}

MF_HOST_DEVICE bool load_expanded_box(const void* boxes, PasteBoxType type, int64_t offset,
                                      int64_t stride, double scale, int64_t out[4]) {
  switch (type) {
    case PasteBoxType::Double:
      return expand_box_to_int(static_cast<const double*>(boxes) + offset, stride, scale, out);
    case PasteBoxType::Half:
      return expand_box_to_int(static_cast<const c10::Half*>(boxes) + offset, stride, scale, out);
    case PasteBoxType::BFloat16:
      return expand_box_to_int(static_cast<const c10::BFloat16*>(boxes) + offset, stride, scale,
                               out);
    default:
      return expand_box_to_int(static_cast<const float*>(boxes) + offset, stride, scale, out);
  }
}

// Where one mask lands in the output. Rows [y_begin, y_end) and columns [x_begin, x_end) are
// the pasted pixels; every other pixel of the mask's output plane is 0. Output pixel (y, x)
// is pixel (y - box_y, x - box_x) of the resized (padded) mask.
template <typename acc_t>
struct PasteGeometry {
  int64_t box_x, box_y;
  int64_t x_begin, x_end, y_begin, y_end;
  acc_t scale_x, scale_y;  // padded mask size / resized size: the resize's source step
};

// box: the integer box from load_expanded_box (valid); padded_h/w: mask size plus 2 padding;
// im_h/im_w: the mask's image size, already clipped to the output plane.
template <typename acc_t>
MF_HOST_DEVICE PasteGeometry<acc_t> paste_geometry(const int64_t box[4], int64_t padded_h,
                                                   int64_t padded_w, int64_t im_h,
                                                   int64_t im_w) {
  PasteGeometry<acc_t> g;
  // torchvision: w = max(int(x2 - x1 + 1), 1); the resized mask is h x w.
  const int64_t w = mf_max<int64_t>(box[2] - box[0] + 1, 1);
  const int64_t h = mf_max<int64_t>(box[3] - box[1] + 1, 1);
  g.box_x = box[0];
  g.box_y = box[1];
  g.x_begin = mf_max<int64_t>(box[0], 0);
  g.x_end = mf_max<int64_t>(mf_min<int64_t>(box[2] + 1, im_w), g.x_begin);
  g.y_begin = mf_max<int64_t>(box[1], 0);
  g.y_end = mf_max<int64_t>(mf_min<int64_t>(box[3] + 1, im_h), g.y_begin);
  // ATen: static_cast<opmath_t>(input_size) / output_size.
  g.scale_x = static_cast<acc_t>(padded_w) / static_cast<acc_t>(w);
  g.scale_y = static_cast<acc_t>(padded_h) / static_cast<acc_t>(h);
  return g;
}

// The two source taps and weights of bilinear resizing (align_corners=False) for destination
// index `dst`: src = max(scale * (dst + 0.5) - 0.5, 0), the upper tap clamped at size - 1.
template <typename acc_t>
struct AxisTaps {
  int64_t i0, i1;
  acc_t w0, w1;
};

template <typename acc_t>
MF_HOST_DEVICE AxisTaps<acc_t> axis_taps(int64_t dst, acc_t scale, int64_t in_size) {
  AxisTaps<acc_t> t;
  acc_t src = scale * (static_cast<acc_t>(dst) + static_cast<acc_t>(0.5)) -
              static_cast<acc_t>(0.5);
  src = src < static_cast<acc_t>(0) ? static_cast<acc_t>(0) : src;
  t.i0 = mf_min<int64_t>(static_cast<int64_t>(floor(src)), in_size - 1);
  t.w1 = mf_min<acc_t>(mf_max<acc_t>(src - static_cast<acc_t>(t.i0), static_cast<acc_t>(0)),
                       static_cast<acc_t>(1));
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  t.w0 = static_cast<acc_t>(1) - t.w1;
  return t;
}

// Resizing along x first, then y, as ATen does: the x-interpolated value of one source row.
template <typename acc_t>
MF_HOST_DEVICE acc_t lerp_x(acc_t v0, acc_t v1, const AxisTaps<acc_t>& tx) {
  return v0 * tx.w0 + v1 * tx.w1;
}

template <typename acc_t>
MF_HOST_DEVICE acc_t lerp_y(acc_t r0, acc_t r1, const AxisTaps<acc_t>& ty) {
  return r0 * ty.w0 + r1 * ty.w1;
}

// The output element: the probability rounded to the masks' dtype, or with a threshold
// (out_t = uint8_t), that probability > threshold as torch compares it: `threshold` must
// already be the threshold cast to the masks' dtype (see paste_threshold).
template <typename scalar_t, typename out_t, typename acc_t>
MF_HOST_DEVICE out_t paste_output(acc_t v, acc_t threshold) {
  if constexpr (std::is_same<out_t, uint8_t>::value) {
    return static_cast<acc_t>(static_cast<scalar_t>(v)) > threshold ? 1 : 0;
  } else {
    return static_cast<out_t>(v);
  }
}

template <typename scalar_t, typename acc_t>
MF_HOST_DEVICE acc_t paste_threshold(double threshold) {
  return static_cast<acc_t>(static_cast<scalar_t>(threshold));
}

}  // namespace maskrcnn_fast
