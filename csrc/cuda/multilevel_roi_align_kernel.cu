// multilevel_roi_align on CUDA: one launch over the ROIs of all pyramid levels. Forward: one block
// per (ROI, block of channels), as roi_align: its threads plan the ROI once (level, image,
// geometry: multilevel_roi_align_math.h) and pool its bins with roi_align_math.h, so the results
// are bitwise those of a per-element plan. NCHW maps: consecutive threads take consecutive bins of
// one channel (coalesced reads and writes); channels_last maps: consecutive channels of one bin
// (coalesced reads), staged through shared memory so that the NCHW output is written a row of bins
// at a time. The levels' pointers, strides and scales travel by value in the kernel argument.
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

#include "common/multilevel_roi_align_math.h"
#include "common/multilevel_roi_align_checks.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;

// Channels and bins of one channels_last staging tile (the +1 keeps the transposed reads off one
// shared-memory bank).
constexpr int kTileChannels = 32;
constexpr int kTileBins = 32;
// Output elements one NCHW block aims at, as roi_align.
constexpr int64_t kElemsPerBlock = 2048;

int blocks_for(int64_t n) {
  // Grid-stride loops cover the rest.
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{1} << 16));
}

unsigned int grid_for_items(int64_t items) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(items, int64_t{1} << 20)));
}

// Channels per block: a tile's worth on channels_last maps, else about kElemsPerBlock outputs.
int64_t channels_per_block(int64_t C, int64_t bins, bool channels_last) {
  if (channels_last) return std::min<int64_t>(C, kTileChannels);
  return std::max<int64_t>(1, std::min<int64_t>(C, (kElemsPerBlock + bins - 1) / bins));
}

template <typename scalar_t, typename acc_t>
MF_DEVICE acc_t pool_bin(const RoiPlan<acc_t>& r, const FeatureLevels<const scalar_t*, acc_t>& f,
                         int64_t c, int bin, int pooled_w) {
  if (!r.valid) return acc_t(0);
  const int l = r.level;
  const scalar_t* plane = f.data[l] + r.batch * f.stride_n[l] + c * f.stride_c[l];
  const int ph = bin / pooled_w, pw = bin - (bin / pooled_w) * pooled_w;
  return roi_align_bin<acc_t>(plane, f.height[l], f.width[l], f.stride_y[l], f.stride_x[l], r.g,
                              ph, pw);
}

template <typename scalar_t, typename acc_t, bool kChannelsLast>
__global__ void multilevel_roi_align_forward_kernel(
    int64_t num_rois, const acc_t* __restrict__ rois, FeatureLevels<const scalar_t*, acc_t> f,
    PoolParams<acc_t> p, int64_t block_channels, scalar_t* __restrict__ out) {
  __shared__ acc_t tile[kTileChannels][kTileBins + 1];
  const int bins = p.pooled_h * p.pooled_w;
  const int64_t C = p.channels;
  const int64_t chunks = (C + block_channels - 1) / block_channels;
  for (int64_t item = blockIdx.x; item < num_rois * chunks; item += gridDim.x) {
    const int64_t k = item / chunks;
    const int64_t c0 = (item - k * chunks) * block_channels;
    const int nc = static_cast<int>(min(block_channels, C - c0));
    // Every thread plans the same ROI: no shared state, no barrier for it.
    const RoiPlan<acc_t> r = plan_roi(rois + k * 5, f, p);
    scalar_t* dst = out + (k * C + c0) * bins;  // [nc, bins], contiguous
    if constexpr (!kChannelsLast) {
      for (int64_t e = threadIdx.x; e < static_cast<int64_t>(nc) * bins; e += blockDim.x) {
        const int cl = static_cast<int>(e / bins);
        const int bin = static_cast<int>(e - static_cast<int64_t>(cl) * bins);
        dst[e] = static_cast<scalar_t>(pool_bin(r, f, c0 + cl, bin, p.pooled_w));
      }
    } else {
      for (int b0 = 0; b0 < bins; b0 += kTileBins) {
        const int nb = min(kTileBins, bins - b0);
        for (int e = threadIdx.x; e < nc * nb; e += blockDim.x) {  // channel fastest: reads
          const int cl = e % nc, b = e / nc;
          tile[cl][b] = pool_bin(r, f, c0 + cl, b0 + b, p.pooled_w);
        }
        __syncthreads();
        for (int e = threadIdx.x; e < nc * nb; e += blockDim.x) {  // bin fastest: writes
          const int cl = e / nb, b = e % nb;
          dst[static_cast<int64_t>(cl) * bins + b0 + b] = static_cast<scalar_t>(tile[cl][b]);
        }
        __syncthreads();  // the tile is free for the next bins
      }
    }
  }
}

// Element e of the NCHW output [K, C, PH, PW].
struct OutIndex {
  int64_t k, c;
  int ph, pw;
};

MF_DEVICE OutIndex decode(int64_t e, int64_t C, int PH, int PW) {
  OutIndex o;
  o.pw = static_cast<int>(e % PW);
  e /= PW;
  o.ph = static_cast<int>(e % PH);
  e /= PH;
  o.c = e % C;
  o.k = e / C;
  return o;
}

template <typename scalar_t, typename acc_t>
__global__ void multilevel_roi_align_backward_kernel(int64_t total,
                                                     const scalar_t* __restrict__ grad,
                                                     const acc_t* __restrict__ rois,
                                                     FeatureLevels<acc_t*, acc_t> f,
                                                     PoolParams<acc_t> p) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const OutIndex o = decode(e, p.channels, p.pooled_h, p.pooled_w);
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
  bool channels_last = C > 1;
  for (const at::Tensor& x : features) channels_last = channels_last && x.stride(1) == 1;
  const int64_t cpb = channels_per_block(C, pooled_height * pooled_width, channels_last);
  const int64_t items = K * ((C + cpb - 1) / cpb);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features[0].scalar_type(), "multilevel_roi_align_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        FeatureLevels<const scalar_t*, acc_t> f;
        set_levels(f, features, scales,
                   [](const at::Tensor& x) { return x.const_data_ptr<scalar_t>(); });
        const PoolParams<acc_t> p = make_pool_params<acc_t>(N, C, pooled_height, pooled_width,
                                                       sampling_ratio, aligned, canonical_scale,
                                                       canonical_level, eps, true);
        auto run = [&](auto kernel) {
          launch(kernel, grid_for_items(items), kThreads, current_stream(), K,
                 rois_c.const_data_ptr<acc_t>(), f, p, cpb, out.mutable_data_ptr<scalar_t>());
        };
        if (channels_last) {
          run(multilevel_roi_align_forward_kernel<scalar_t, acc_t, true>);
        } else {
          run(multilevel_roi_align_forward_kernel<scalar_t, acc_t, false>);
        }
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
