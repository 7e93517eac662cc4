#pragma once
// The per-pair arithmetic of box_iou, shared by the CPU and the CUDA kernels (and by
// match_boxes, which computes the same IoU without storing it).
//
// IoU follows torchvision.ops.box_iou operation for operation, so that float32 results are
// bitwise torchvision's: areas (x2 - x1) * (y2 - y1) in the compute type; lt = max(x1, y1),
// rb = min(x2, y2) elementwise with NaN propagating (torch.max / torch.min); w, h = rb - lt
// rounded to the boxes' own dtype (torchvision subtracts before it upcasts half to float), then
// clamp(min=0); inter = w * h; union = (area1 + area2) - inter; iou = inter / union. T is the
// boxes' dtype, acc_t the compute type (float for float/half/bfloat16, double for double).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/macros.h"

namespace maskrcnn_fast {

template <typename T>
MF_HOST_DEVICE bool iou_isnan(T v) {
  return v != v;
}

// torch.maximum / torch.minimum: a NaN operand gives NaN. `|`, not `||`: no branch, so the
// CPU loops if-convert and vectorise.
template <typename T>
MF_HOST_DEVICE T nan_max(T a, T b) {
  return ((a > b) | iou_isnan(a)) ? a : b;
}
template <typename T>
MF_HOST_DEVICE T nan_min(T a, T b) {
  return ((a < b) | iou_isnan(a)) ? a : b;
}

// One box in the compute type, with its area.
template <typename acc_t>
struct IouBox {
  acc_t x1, y1, x2, y2, area;
};

template <typename T, typename acc_t>
MF_HOST_DEVICE IouBox<acc_t> iou_box(const T* b) {
  IouBox<acc_t> r;
  r.x1 = static_cast<acc_t>(b[0]);
  r.y1 = static_cast<acc_t>(b[1]);
  r.x2 = static_cast<acc_t>(b[2]);
  r.y2 = static_cast<acc_t>(b[3]);
  r.area = (r.x2 - r.x1) * (r.y2 - r.y1);
  return r;
}

// Side of the intersection along one axis: the subtraction rounds to T (a no-op for float and
// double), clamp(min=0) keeps NaN.
template <typename T, typename acc_t>
MF_HOST_DEVICE acc_t iou_side(acc_t lo_a, acc_t hi_a, acc_t lo_b, acc_t hi_b) {
  const acc_t d = static_cast<acc_t>(static_cast<T>(nan_min(hi_a, hi_b) - nan_max(lo_a, lo_b)));
  return d < acc_t(0) ? acc_t(0) : d;
}

// IoU of a (row, boxes1 / ground truth) and b (column, boxes2 / prediction). Degenerate pairs
// (both areas zero and no overlap) give 0 / 0 = NaN, as in torchvision.
template <typename T, typename acc_t>
MF_HOST_DEVICE acc_t pair_iou(const IouBox<acc_t>& a, const IouBox<acc_t>& b) {
  const acc_t w = iou_side<T, acc_t>(a.x1, a.x2, b.x1, b.x2);
  const acc_t h = iou_side<T, acc_t>(a.y1, a.y2, b.y1, b.y2);
  const acc_t inter = w * h;
  const acc_t uni = (a.area + b.area) - inter;
  return inter / uni;
}

}  // namespace maskrcnn_fast
