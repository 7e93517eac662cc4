#pragma once
// Input checks of match_boxes, called by both the CPU and the CUDA entry points so that both
// raise the same messages (host only).
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "common/checks.h"

namespace maskrcnn_fast {

inline void check_counts(const at::Tensor& counts, int64_t n, const char* name,
                         const at::Tensor& like) {
  check_dim(counts, 1, name, "Tensor[N] (int64)");
  TORCH_CHECK(counts.scalar_type() == at::kLong, name, " must be an int64 tensor, got ",
              counts.scalar_type());
  TORCH_CHECK(counts.size(0) == n, name, " must hold one count per image (", n,
              "), got a tensor of shape ", counts.sizes());
  check_same_device(counts, name, like, "gt_boxes");
}

// Shapes, dtypes, devices and thresholds; the counts' values are data, checked by the CPU
// kernel (check_count_values) and clamped by the CUDA kernel.
inline void check_match_boxes(const at::Tensor& gt_boxes, const at::Tensor& gt_counts,
                              const at::Tensor& boxes, const c10::optional<at::Tensor>& box_counts,
                              double high_threshold, double low_threshold) {
  check_floating(gt_boxes, "gt_boxes");
  check_dim(gt_boxes, 3, "gt_boxes", "Tensor[N, G, 4]");
  check_last_dim(gt_boxes, 4, "gt_boxes", "Tensor[N, G, 4]");
  check_floating(boxes, "boxes");
  TORCH_CHECK(boxes.dim() == 2 || boxes.dim() == 3,
              "boxes must be Tensor[N, T, 4] or Tensor[T, 4] (shared by every image), got a "
              "tensor of shape ", boxes.sizes());
  check_last_dim(boxes, 4, "boxes", "Tensor[N, T, 4] or Tensor[T, 4]");
  const int64_t n = gt_boxes.size(0);
  TORCH_CHECK(boxes.dim() == 2 || boxes.size(0) == n,
              "boxes must be Tensor[N, T, 4] with N = gt_boxes.size(0) = ", n,
              ", got a tensor of shape ", boxes.sizes());
  check_same_dtype(gt_boxes, "gt_boxes", boxes, "boxes");
  check_same_device(gt_boxes, "gt_boxes", boxes, "boxes");
  check_counts(gt_counts, n, "gt_counts", gt_boxes);
  if (box_counts.has_value()) check_counts(*box_counts, n, "box_counts", gt_boxes);
  // NaN fails these tests too.
  TORCH_CHECK(low_threshold <= high_threshold, "low_threshold (", low_threshold,
              ") must be <= high_threshold (", high_threshold, ")");
}

// CPU only (the values are on the host there): every count in [0, limit].
inline void check_count_values(const at::Tensor& counts, int64_t limit, const char* name,
                               const char* limit_name) {
  const int64_t* c = counts.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < counts.numel(); ++i) {
    TORCH_CHECK(c[i] >= 0 && c[i] <= limit, name, "[", i, "] = ", c[i], " is outside [0, ",
                limit_name, " = ", limit, "]");
  }
}

}  // namespace maskrcnn_fast
