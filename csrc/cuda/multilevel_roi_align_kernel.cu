// multilevel_roi_align on CUDA: one launch over the ROIs of all pyramid levels; each thread
// picks its ROI's level, image and geometry (multilevel_math.h) and pools one output element
// with roi_align_math.h. The levels' pointers, strides and scales travel by value in the
// kernel argument.
//
// No host synchronisation: a ROI whose batch index is not an integer in [0, N), whose box is
// not finite, or that has no level writes zeros (and receives no gradient) instead of reading
// outside the maps. The backward adds with atomics, so its float rounding order is not fixed.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cuda/launch.cuh"

#include "common/multilevel_math.h"
#include "common/multilevel_roi_align_checks.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  // Grid-stride loops cover the rest.
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{1} << 16));
}

// Element e of the output [K, C, PH, PW]: channel-fastest order (c, then pw, ph, k) when every
// map is channels_last, so that neighbouring threads read neighbouring memory; else NCHW order.
struct OutIndex {
  int64_t k, c;
  int ph, pw;
};

MF_DEVICE OutIndex decode(int64_t e, int64_t C, int PH, int PW, bool channels_fastest) {
  OutIndex o;
  if (channels_fastest) {
    o.c = e % C;
    e /= C;
    o.pw = static_cast<int>(e % PW);
    e /= PW;
    o.ph = static_cast<int>(e % PH);
    o.k = e / PH;
  } else {
    o.pw = static_cast<int>(e % PW);
    e /= PW;
    o.ph = static_cast<int>(e % PH);
    e /= PH;
    o.c = e % C;
    o.k = e / C;
  }
  return o;
}

template <typename scalar_t, typename acc_t>
__global__ void multilevel_roi_align_forward_kernel(
    int64_t total, const acc_t* __restrict__ rois, FeatureLevels<const scalar_t*, acc_t> f,
    PoolParams<acc_t> p, bool channels_fastest, scalar_t* __restrict__ out) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const OutIndex o = decode(e, p.channels, p.pooled_h, p.pooled_w, channels_fastest);
    const RoiPlan<acc_t> r = plan_roi(rois + o.k * 5, f, p);
    acc_t v = acc_t(0);
    if (r.valid) {
      const int l = r.level;
      const scalar_t* plane = f.data[l] + r.batch * f.stride_n[l] + o.c * f.stride_c[l];
      v = roi_align_bin<acc_t>(plane, f.height[l], f.width[l], f.stride_y[l], f.stride_x[l], r.g,
                               o.ph, o.pw);
    }
    out[((o.k * p.channels + o.c) * p.pooled_h + o.ph) * p.pooled_w + o.pw] =
        static_cast<scalar_t>(v);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void multilevel_roi_align_backward_kernel(int64_t total,
                                                     const scalar_t* __restrict__ grad,
                                                     const acc_t* __restrict__ rois,
                                                     FeatureLevels<acc_t*, acc_t> f,
                                                     PoolParams<acc_t> p) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const OutIndex o = decode(e, p.channels, p.pooled_h, p.pooled_w, false);
    const RoiPlan<acc_t> r = plan_roi(rois + o.k * 5, f, p);
    if (!r.valid) continue;
    const int l = r.level;
    acc_t* plane = f.data[l] + r.batch * f.stride_n[l] + o.c * f.stride_c[l];
    const acc_t g = static_cast<acc_t>(grad[e]);
    roi_align_bin_backward(g, f.height[l], f.width[l], f.stride_y[l], f.stride_x[l], r.g, o.ph,
                           o.pw, [plane](int64_t off, acc_t v) { atomicAdd(plane + off, v); });
  }
}

at::Tensor multilevel_roi_align_cuda(at::TensorList features, const at::Tensor& rois,
                                     c10::ArrayRef<double> scales, int64_t pooled_height,
                                     int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                     int64_t canonical_scale, int64_t canonical_level,
                                     double eps) {
  check_multilevel_roi_align(features, rois, scales, pooled_height, pooled_width, sampling_ratio,
                             canonical_scale, canonical_level, eps);
  DeviceGuard guard(rois.device());
  const int64_t K = rois.size(0), N = features[0].size(0), C = features[0].size(1);
  at::Tensor out = at::empty({K, C, pooled_height, pooled_width}, features[0].options());
  if (out.numel() == 0) return out;
  const at::Tensor rois_c = rois_for_kernel(rois, features[0].scalar_type());
  bool channels_fastest = C > 1;
  for (const at::Tensor& x : features) channels_fastest = channels_fastest && x.stride(1) == 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features[0].scalar_type(), "multilevel_roi_align_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        FeatureLevels<const scalar_t*, acc_t> f;
        set_levels(f, features, scales,
                   [](const at::Tensor& x) { return x.const_data_ptr<scalar_t>(); });
        const PoolParams<acc_t> p = make_pool_params<acc_t>(N, C, pooled_height, pooled_width,
                                                       sampling_ratio, aligned, canonical_scale,
                                                       canonical_level, eps, true);
        const int64_t total = out.numel();
        launch(multilevel_roi_align_forward_kernel<scalar_t, acc_t>, blocks_for(total), kThreads,
               current_stream(), total, rois_c.const_data_ptr<acc_t>(), f, p, channels_fastest,
               out.mutable_data_ptr<scalar_t>());
      });
  return out;
}

std::vector<at::Tensor> multilevel_roi_align_backward_cuda(
    const at::Tensor& grad, const at::Tensor& rois, c10::ArrayRef<double> scales,
    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned,
    int64_t canonical_scale, int64_t canonical_level, double eps, int64_t batch_size,
    int64_t channels, c10::IntArrayRef heights, c10::IntArrayRef widths) {
  check_multilevel_roi_align_backward(grad, rois, scales, pooled_height, pooled_width,
                                      sampling_ratio, canonical_scale, canonical_level, eps,
                                      batch_size, channels, heights, widths);
  DeviceGuard guard(grad.device());
  const at::ScalarType dtype = grad.scalar_type();
  // Reduced types accumulate in float (atomics on float) and are rounded once at the end.
  std::vector<at::Tensor> acc_grads;
  for (size_t l = 0; l < heights.size(); ++l) {
    acc_grads.push_back(at::zeros({batch_size, channels, heights[l], widths[l]},
                                  grad.options().dtype(at::toOpMathType(dtype))));
  }
  const int64_t total = grad.numel();
  if (total > 0) {
    const at::Tensor rois_c = rois_for_kernel(rois, dtype);
    const at::Tensor grad_c = grad.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, dtype, "multilevel_roi_align_backward_cuda", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          FeatureLevels<acc_t*, acc_t> f;
          set_levels(f, acc_grads, scales,
                     [](const at::Tensor& x) { return x.mutable_data_ptr<acc_t>(); });
          const PoolParams<acc_t> p = make_pool_params<acc_t>(
              batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned,
              canonical_scale, canonical_level, eps, true);
          launch(multilevel_roi_align_backward_kernel<scalar_t, acc_t>, blocks_for(total), kThreads,
                 current_stream(), total, grad_c.const_data_ptr<scalar_t>(),
                 rois_c.const_data_ptr<acc_t>(), f, p);
        });
  }
  std::vector<at::Tensor> grads;
  for (auto& a : acc_grads) grads.push_back(a.scalar_type() == dtype ? a : a.to(dtype));
  return grads;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("multilevel_roi_align", &multilevel_roi_align_cuda);
  m.impl("_multilevel_roi_align_backward", &multilevel_roi_align_backward_cuda);
}

}  // namespace maskrcnn_fast
