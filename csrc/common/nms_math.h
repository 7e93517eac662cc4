#pragma once
// The per-pair arithmetic of NMS, shared by the CPU and the CUDA kernels.
//
// The suppression test is torchvision's, operation for operation, so that the kept set is the
// same bit for bit: area = (x2 - x1) * (y2 - y1); w = max(0, min(x2) - max(x1)), same for h;
// inter = w * h; suppress when inter / ((area_a + area_b) - inter) > iou_threshold.
// T is the compute type: float for float/half/bfloat16 inputs, double for double.
// (torchvision's CPU nms has no half kernel; its CUDA one computes half in float, as we do.)
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/macros.h"

namespace maskrcnn_fast {

// Boxes within a 64-box tile, and bits per mask word, of the CUDA bitmask.
constexpr int kNmsTile = 64;

template <typename T>
MF_HOST_DEVICE T nms_box_area(T x1, T y1, T x2, T y2) {
  return (x2 - x1) * (y2 - y1);
}

// Intersection and union of boxes a and b, in torchvision's order of operations; the union is
// (area_a + area_b) - inter. Symmetric in a and b for non-NaN inputs.
template <typename T>
MF_HOST_DEVICE void nms_inter_union(T ax1, T ay1, T ax2, T ay2, T a_area, T bx1, T by1, T bx2,
                                    T by2, T b_area, T& inter, T& uni) {
  const T w = mf_max(T(0), mf_min(ax2, bx2) - mf_max(ax1, bx1));
  const T h = mf_max(T(0), mf_min(ay2, by2) - mf_max(ay1, by1));
  inter = w * h;
  uni = (a_area + b_area) - inter;
}

// True when box b must be suppressed by box a (or a by b: the test is symmetric in a and b,
// which lets the CUDA kernel store a tile's full 64x64 matrix and read it in either direction).
// With a NaN anywhere in either box the area is NaN, the ratio is NaN and the test is false;
// where min/max order of NaN operands differs from torchvision's the ratio is NaN or 0 either
// way, and neither exceeds a threshold >= 0: the outcome is the same.
template <typename T>
MF_HOST_DEVICE bool nms_suppresses(T ax1, T ay1, T ax2, T ay2, T a_area, T bx1, T by1, T bx2,
                                   T by2, T b_area, T threshold) {
  T inter, uni;
  nms_inter_union(ax1, ay1, ax2, ay2, a_area, bx1, by1, bx2, by2, b_area, inter, uni);
  return inter / uni > threshold;
}

// torchvision compares the IoU (in the compute type) with the threshold as a double. For a
// value x of type T, x > t (double) exactly when x > the largest T not above t, so the kernels
// compare in T against that value and never need double arithmetic for float inputs.
template <typename T>
inline T nms_threshold_as(double t) {
  T r = static_cast<T>(t);
  if (static_cast<double>(r) > t) {
    r = std::nextafter(r, -std::numeric_limits<T>::infinity());
  }
  return r;
}

}  // namespace maskrcnn_fast
