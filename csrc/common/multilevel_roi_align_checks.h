#pragma once
// Input checks of multilevel_roi_align and its backward, and the kernel arguments built from
// the inputs, shared by the CPU and the CUDA entry points so that both raise the same messages
// and see the same arguments. Host only.
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <vector>

#include "common/checks.h"
#include "common/multilevel_roi_align_math.h"
#include "common/roi_align_checks.h"

namespace maskrcnn_fast {

// rois have the features' dtype, or float32 with float16/bfloat16 features (mixed precision:
// float32 proposals and half maps, what torchvision computes under autocast).
inline bool rois_dtype_ok(at::ScalarType rois, at::ScalarType features) {
  return rois == features ||
         (rois == at::kFloat && (features == at::kHalf || features == at::kBFloat16));
}

// The ROIs as the kernels read them: contiguous, in the opmath type of the features (exact for
// every accepted dtype).
inline at::Tensor rois_for_kernel(const at::Tensor& rois, at::ScalarType features) {
  return rois.to(at::toOpMathType(features)).contiguous();
}

inline void check_multilevel_params(const at::Tensor& rois, c10::ArrayRef<double> scales,
                                    int64_t num_levels, int64_t pooled_height,
                                    int64_t pooled_width, int64_t sampling_ratio,
                                    int64_t canonical_scale, int64_t canonical_level,
                                    double eps) {
  check_floating(rois, "rois");
  check_dim(rois, 2, "rois", "Tensor[K, 5] (batch index, x1, y1, x2, y2)");
  check_last_dim(rois, 5, "rois", "Tensor[K, 5] (batch index, x1, y1, x2, y2)");
  TORCH_CHECK(num_levels >= 1 && num_levels <= kMaxLevels, "features must hold 1 to ",
              kMaxLevels, " feature maps, got ", num_levels);
  TORCH_CHECK(static_cast<int64_t>(scales.size()) == num_levels,
              "scales must have one entry per feature map (", num_levels, "), got ",
              scales.size());
  for (double s : scales) {
    // The level of a scale is taken in float32 (as torchvision): it must be one there too.
    const float sf = static_cast<float>(s);
    TORCH_CHECK(std::isfinite(sf) && sf > 0,
                "scales must be positive and finite in float32, got ", scales);
  }
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0,
              "pooled_height and pooled_width (output_size) must be positive, got (",
              pooled_height, ", ", pooled_width, ")");
  TORCH_CHECK(pooled_height < (int64_t{1} << 31) && pooled_width < (int64_t{1} << 31) &&
                  pooled_height * pooled_width < (int64_t{1} << 31),
              "pooled_height * pooled_width (output_size) is too large: ", pooled_height, " x ",
              pooled_width);
  // Larger grids would overflow the int sample count of roi_geometry (and take hours).
  TORCH_CHECK(sampling_ratio <= kMaxAdaptiveGrid, "sampling_ratio must be at most ",
              kMaxAdaptiveGrid, " (<= 0: adaptive), got ", sampling_ratio);
  TORCH_CHECK(canonical_scale > 0 && canonical_scale < (int64_t{1} << 31),
              "canonical_scale must be a positive int32, got ", canonical_scale);
  TORCH_CHECK(canonical_level > -(int64_t{1} << 31) && canonical_level < (int64_t{1} << 31),
              "canonical_level must be an int32, got ", canonical_level);
  TORCH_CHECK(std::isfinite(eps), "eps must be finite, got ", eps);
}

// features: same dtype as rois, one device, Tensor[N, C, H_l, W_l] with common N and C.
inline void check_multilevel_roi_align(c10::ArrayRef<at::Tensor> features,
                                       const at::Tensor& rois, c10::ArrayRef<double> scales,
                                       int64_t pooled_height, int64_t pooled_width,
                                       int64_t sampling_ratio, int64_t canonical_scale,
                                       int64_t canonical_level, double eps) {
  check_multilevel_params(rois, scales, static_cast<int64_t>(features.size()), pooled_height,
                          pooled_width, sampling_ratio, canonical_scale, canonical_level, eps);
  const at::Tensor& f0 = features[0];
  for (size_t l = 0; l < features.size(); ++l) {
    const at::Tensor& f = features[l];
    TORCH_CHECK(f.dim() == 4, "features[", l,
                "] must be Tensor[N, C, H, W], got a tensor of shape ", f.sizes());
    TORCH_CHECK(f.scalar_type() == f0.scalar_type(),
                "features must all have the same dtype, got features[0] of ", f0.scalar_type(),
                " and features[", l, "] of ", f.scalar_type());
    TORCH_CHECK(rois_dtype_ok(rois.scalar_type(), f.scalar_type()), "features[", l,
                "] and rois must have the same dtype (or float32 rois with float16/bfloat16 "
                "features), got ", f.scalar_type(), " and ", rois.scalar_type());
    TORCH_CHECK(f.device() == rois.device(), "features[", l,
                "] and rois must be on the same device, got ", f.device(), " and ",
                rois.device());
    TORCH_CHECK(f.size(0) == f0.size(0) && f.size(1) == f0.size(1),
                "features must share batch size and channel count, got features[0] of shape ",
                f0.sizes(), " and features[", l, "] of shape ", f.sizes());
    TORCH_CHECK(f.size(2) < (int64_t{1} << 31) && f.size(3) < (int64_t{1} << 31),
                "features[", l, "] is too large: ", f.sizes());
  }
}

inline void check_multilevel_roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                                                c10::ArrayRef<double> scales,
                                                int64_t pooled_height, int64_t pooled_width,
                                                int64_t sampling_ratio, int64_t canonical_scale,
                                                int64_t canonical_level, double eps,
                                                int64_t batch_size, int64_t channels,
                                                c10::ArrayRef<int64_t> heights,
                                                c10::ArrayRef<int64_t> widths) {
  check_multilevel_params(rois, scales, static_cast<int64_t>(heights.size()), pooled_height,
                          pooled_width, sampling_ratio, canonical_scale, canonical_level, eps);
  TORCH_CHECK(widths.size() == heights.size(), "heights and widths must have the same length, got ",
              heights.size(), " and ", widths.size());
  for (size_t l = 0; l < heights.size(); ++l) {
    TORCH_CHECK(heights[l] >= 0 && widths[l] >= 0 && heights[l] < (int64_t{1} << 31) &&
                    widths[l] < (int64_t{1} << 31),
                "heights and widths must be non-negative, got ", heights, " and ", widths);
  }
  TORCH_CHECK(batch_size >= 0 && channels >= 0,
              "batch_size and channels must be non-negative, got ", batch_size, " and ", channels);
  check_floating(grad, "grad");
  TORCH_CHECK(rois_dtype_ok(rois.scalar_type(), grad.scalar_type()),
              "grad and rois must have the same dtype (or float32 rois with float16/bfloat16 "
              "grad), got ", grad.scalar_type(), " and ", rois.scalar_type());
  check_same_device(grad, "grad", rois, "rois");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "grad must be Tensor[K, C, pooled_height, pooled_width] = [", rois.size(0), ", ",
              channels, ", ", pooled_height, ", ", pooled_width, "], got ", grad.sizes());
}

// reciprocal_div: true for the CUDA kernel (see fpn_level).
template <typename acc_t>
PoolParams<acc_t> make_pool_params(int64_t batch, int64_t channels, int64_t pooled_height,
                                   int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                   int64_t canonical_scale, int64_t canonical_level, double eps,
                                   bool reciprocal_div) {
  PoolParams<acc_t> p;
  p.batch = batch;
  p.channels = channels;
  p.pooled_h = static_cast<int>(pooled_height);
  p.pooled_w = static_cast<int>(pooled_width);
  p.sampling_ratio = static_cast<int>(sampling_ratio);
  p.aligned = aligned;
  p.canonical_scale = static_cast<int>(canonical_scale);
  p.canonical_level = static_cast<int>(canonical_level);
  p.eps = static_cast<acc_t>(eps);
  p.reciprocal_div = reciprocal_div;
  return p;
}

// Sizes, scales and k_min/k_max of the levels; the caller fills in pointers and strides.
template <typename ptr_t, typename acc_t>
void set_levels_meta(FeatureLevels<ptr_t, acc_t>& f, c10::ArrayRef<double> scales,
                     c10::ArrayRef<int64_t> heights, c10::ArrayRef<int64_t> widths) {
  f.num_levels = static_cast<int>(scales.size());
  for (int l = 0; l < f.num_levels; ++l) {
    f.height[l] = static_cast<int>(heights[l]);
    f.width[l] = static_cast<int>(widths[l]);
    f.scale[l] = static_cast<acc_t>(scales[l]);
  }
  f.k_min = level_of_scale(scales.front());
  f.k_max = level_of_scale(scales.back());
}

// Pointers, strides, sizes, scales and k_min/k_max of the levels from their maps
// ([N, C, H_l, W_l], any strides): the one setup of the CPU and CUDA, forward and backward
// entry points. `data(map)` gives each map's data pointer of type ptr_t.
template <typename ptr_t, typename acc_t, typename DataFn>
void set_levels(FeatureLevels<ptr_t, acc_t>& f, at::TensorList maps,
                c10::ArrayRef<double> scales, DataFn data) {
  std::vector<int64_t> hs, ws;
  for (size_t l = 0; l < maps.size(); ++l) {
    const at::Tensor& x = maps[l];
    f.data[l] = data(x);
    f.stride_n[l] = x.stride(0);
    f.stride_c[l] = x.stride(1);
    f.stride_y[l] = x.stride(2);
    f.stride_x[l] = x.stride(3);
    hs.push_back(x.size(2));
    ws.push_back(x.size(3));
  }
  set_levels_meta(f, scales, hs, ws);
}

}  // namespace maskrcnn_fast
