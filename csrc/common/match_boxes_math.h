#pragma once
// The per-prediction arithmetic of match_boxes, shared by the CPU and the CUDA kernels.
//
// Matching follows torchvision's Matcher on the IoU matrix (box_iou_math.h's pair_iou): torch.max
// over the ground truths picks the first maximum, and a NaN beats every number (the first NaN
// wins). acc_t is the compute type (float for float/half/bfloat16, double for double).
#include <cstdint>
#include <cstring>

#include "common/box_iou_math.h"
#include "common/macros.h"

namespace maskrcnn_fast {

// The running max / argmax of torch.max(dim) on the CPU, fed in increasing index order: a
// larger value or the first NaN replaces the best; ties keep the earlier index.
template <typename acc_t>
MF_HOST_DEVICE bool argmax_takes(acc_t v, acc_t best) {
  return (v > best) | (iou_isnan(v) & !iou_isnan(best));
}

// The running max of torch.max(dim) (values only): NaN propagates. Branch-free on the CPU.
template <typename acc_t>
MF_HOST_DEVICE acc_t max_update(acc_t best, acc_t v) {
  return ((v > best) | iou_isnan(v)) ? v : best;
}

// Unsigned keys in the order of max_update, for atomicMax: every NaN is the largest key; 0 is
// below every value (the empty max) and decodes to NaN, which equals nothing. -0 < +0 as keys,
// which only decides which zero is stored: the keys are decoded for == tests.
template <typename acc_t>
struct IouKeyOf;
template <>
struct IouKeyOf<float> {
  using type = uint32_t;
};
template <>
struct IouKeyOf<double> {
  using type = unsigned long long;
};

template <typename acc_t>
MF_HOST_DEVICE typename IouKeyOf<acc_t>::type iou_key(acc_t v) {
  using K = typename IouKeyOf<acc_t>::type;
  constexpr K sign = K(1) << (sizeof(K) * 8 - 1);
  if (iou_isnan(v)) return ~K(0);
  K bits;
  memcpy(&bits, &v, sizeof(K));
  return (bits & sign) ? ~bits : (bits | sign);
}

template <typename acc_t>
MF_HOST_DEVICE acc_t iou_from_key(typename IouKeyOf<acc_t>::type key) {
  using K = typename IouKeyOf<acc_t>::type;
  constexpr K sign = K(1) << (sizeof(K) * 8 - 1);
  const K bits = (key & sign) ? (key & ~sign) : ~key;
  acc_t v;
  memcpy(&v, &bits, sizeof(K));
  return v;
}

// Matcher's labels.
constexpr int64_t kBelowLowThreshold = -1;
constexpr int64_t kBetweenThresholds = -2;

// Matcher's decision for one prediction: best IoU `best` with ground truth `arg`; `low_quality`
// when the prediction has, for some ground truth, that ground truth's best IoU. NaN passes both
// threshold tests as false, so a NaN best keeps its index (torchvision's behaviour).
template <typename acc_t>
MF_HOST_DEVICE int64_t match_decision(acc_t best, int64_t arg, acc_t high, acc_t low,
                                      bool low_quality) {
  if (low_quality) return arg;
  if (best < low) return kBelowLowThreshold;
  if (best >= low && best < high) return kBetweenThresholds;
  return arg;
}

}  // namespace maskrcnn_fast
