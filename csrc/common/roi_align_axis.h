#pragma once
// bilinear() of roi_align_math.h split into its two axes, so that a kernel can compute the
// PH * grid_h row taps and PW * grid_w column taps of a ROI once and combine them per sample
// instead of redoing the bilinear arithmetic for every sample of every channel.
//
// Exact, not an approximation: bilinear() treats y and x independently (validity, clamping,
// low/high index, ly/hy and lx/hx), and bilinear(pos, 0, size, 1) returns w1 = h * 1 and
// w3 = l * 1, i.e. exactly h and l of that axis. The products of bilinear_from_axes are the
// products bilinear() forms (w1 = hy * hx, ...), so results are bitwise identical; the CPU
// tests against torchvision check it.
#include "common/roi_align_math.h"

namespace maskrcnn_fast {

template <typename T>
struct AxisTap {
  int low, high;   // the two neighbouring pixel indices along this axis
  T w_low, w_high; // their weights (h and l)
  bool valid;      // within [-1, size] and size > 0
};

template <typename T>
MF_HOST_DEVICE AxisTap<T> axis_tap(T pos, int size) {
  const Bilinear<T> b = bilinear(pos, T(0), size, 1);
  AxisTap<T> a;
  a.low = b.y_low;
  a.high = b.y_high;
  a.w_low = b.w1;
  a.w_high = b.w3;
  a.valid = b.valid;
  return a;
}

// The same Bilinear as bilinear(y, x, height, width), from axis_tap(y, height) and
// axis_tap(x, width).
template <typename T>
MF_HOST_DEVICE Bilinear<T> bilinear_from_axes(const AxisTap<T>& ay, const AxisTap<T>& ax) {
  Bilinear<T> b;
  b.valid = ay.valid && ax.valid;
  if (!b.valid) {
    b.y_low = b.y_high = b.x_low = b.x_high = 0;
    b.w1 = b.w2 = b.w3 = b.w4 = T(0);
    return b;
  }
  b.y_low = ay.low;
  b.y_high = ay.high;
  b.x_low = ax.low;
  b.x_high = ax.high;
  b.w1 = ay.w_low * ax.w_low;
  b.w2 = ay.w_low * ax.w_high;
  b.w3 = ay.w_high * ax.w_low;
  b.w4 = ay.w_high * ax.w_high;
  return b;
}

}  // namespace maskrcnn_fast
