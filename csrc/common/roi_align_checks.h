#pragma once
// Argument checks of roi_align and _roi_align_backward, called by the CPU and the CUDA entry
// points so that both raise the same messages, and the batch-index check of every op that takes
// rois [K, 5] (roi_align, multilevel_roi_align). Host only.
#include <ATen/OpMathType.h>

#include <cmath>

#include "common/checks.h"
#include "common/roi_align_math.h"

namespace maskrcnn_fast {

inline void check_roi_align_params(const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width,
                                   int64_t sampling_ratio) {
  check_dim(rois, 2, "rois", "Tensor[K, 5]");
  check_last_dim(rois, 5, "rois", "Tensor[K, 5]");
  check_floating(rois, "rois");
  TORCH_CHECK(pooled_height > 0 && pooled_height <= INT32_MAX, "pooled_height must be positive (and fit in int32), got ",
              pooled_height);
  TORCH_CHECK(pooled_width > 0 && pooled_width <= INT32_MAX, "pooled_width must be positive (and fit in int32), got ",
              pooled_width);
  // Keeps per-block element counts of the CUDA kernel in int; far beyond any real use.
  TORCH_CHECK(pooled_height * pooled_width <= (int64_t(1) << 26),
              "pooled_height * pooled_width must be at most 2^26, got ", pooled_height, " * ",
              pooled_width);
  TORCH_CHECK(std::isfinite(spatial_scale) && spatial_scale > 0,
              "spatial_scale must be positive and finite, got ", spatial_scale);
  // Larger grids would overflow the int sample count of roi_geometry (and take hours).
  TORCH_CHECK(sampling_ratio >= -1 && sampling_ratio <= kMaxAdaptiveGrid,
              "sampling_ratio must be -1 (adaptive), 0 (adaptive) or positive and at most ",
              kMaxAdaptiveGrid, ", got ", sampling_ratio);
}

// input: [N, C, H, W]; rois: [K, 5] (batch index, x1, y1, x2, y2), same dtype and device.
inline void check_roi_align_inputs(const at::Tensor& input, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t sampling_ratio) {
  check_dim(input, 4, "input", "Tensor[N, C, H, W]");
  check_floating(input, "input");
  check_roi_align_params(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio);
  check_same_dtype(input, "input", rois, "rois");
  check_same_device(input, "input", rois, "rois");
  TORCH_CHECK(input.size(2) <= INT32_MAX && input.size(3) <= INT32_MAX,
              "input height and width must fit in int32, got ", input.sizes());
}

// grad: [K, C, PH, PW], the gradient of roi_align's output; the sizes name the input's shape.
inline void check_roi_align_backward_inputs(const at::Tensor& grad, const at::Tensor& rois,
                                            double spatial_scale, int64_t pooled_height,
                                            int64_t pooled_width, int64_t batch_size,
                                            int64_t channels, int64_t height, int64_t width,
                                            int64_t sampling_ratio) {
  check_dim(grad, 4, "grad", "Tensor[K, C, pooled_height, pooled_width]");
  check_floating(grad, "grad");
  check_roi_align_params(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio);
  check_same_dtype(grad, "grad", rois, "rois");
  check_same_device(grad, "grad", rois, "rois");
  TORCH_CHECK(batch_size >= 0, "batch_size must be non-negative, got ", batch_size);
  TORCH_CHECK(channels >= 0, "channels must be non-negative, got ", channels);
  TORCH_CHECK(height >= 0 && height <= INT32_MAX, "height must be non-negative (and fit in int32), got ", height);
  TORCH_CHECK(width >= 0 && width <= INT32_MAX, "width must be non-negative (and fit in int32), got ", width);
  TORCH_CHECK(grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "grad must be Tensor[K, C, pooled_height, pooled_width] = [", rois.size(0), ", ",
              channels, ", ", pooled_height, ", ", pooled_width, "], got ", grad.sizes());
}

// The layout a kernel works in: channels-last when the tensor is stored that way, else NCHW.
// maskrcnn_fast/ops/roi_align.py applies the same rule in its fake kernels.
inline bool roi_align_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() &&
         t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// CPU only (the values are on the host there): rois[k, 0] must be an integer batch index in
// [0, batch_size) (roi_batch_index). A bad index is the caller's bug, an error here; the CUDA
// kernels cannot raise without a host sync, so they write zeros for that ROI instead. scalar_t:
// the stored type of the contiguous rois; the test runs in its op math type, as the kernels read
// the index.
template <typename scalar_t>
void check_batch_indices(const at::Tensor& rois, int64_t batch_size) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* r = rois.const_data_ptr<scalar_t>();
  for (int64_t k = 0; k < rois.size(0); ++k) {
    const acc_t b = static_cast<acc_t>(r[k * 5]);
    TORCH_CHECK(roi_batch_index(b, batch_size) >= 0, "rois[", k,
                ", 0] must be an integer batch index in [0, ", batch_size, "), got ", b);
  }
}

}  // namespace maskrcnn_fast
