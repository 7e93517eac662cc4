// ROIAlign on CUDA: forward and backward, NCHW and channels-last.
//
// One block per (ROI, block of channels). The block first puts the ROI's row taps
// (PH * grid_h of them) and column taps (PW * grid_w) in shared memory (common/roi_align_math.h,
// bitwise the same as bilinear()), then each thread makes output elements of that ROI from the
// tables: the geometry and the bilinear weights are computed once per ROI instead of once per
// sample of every channel. NCHW: consecutive threads take consecutive bins of one channel;
// channels-last: consecutive channels of one bin, so every load and store is coalesced.
//
// A ROI whose batch index is not an integer in [0, N) is skipped inside the kernel (zeros
// forward, no gradient backward): checking it on the host would need a device sync.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "cuda/launch.cuh"

#include "common/roi_align_checks.h"
#include "common/roi_align_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;
// Row plus column taps kept in shared memory (20 KB in float, 32 KB in double). Larger grids
// (adaptive bins over ~146 pixels at 7x7) compute their taps per sample instead.
constexpr int kMaxAxisTaps = 1024;
// Output elements one block aims at: enough work per thread to amortise the tables.
constexpr int64_t kElemsPerBlock = 2048;

template <typename acc_t>
struct RoiTaps {
  RoiGeometry<acc_t> g;
  int64_t n;         // batch index
  bool active;       // valid geometry and batch index
  bool table;        // taps are in shared memory
  int ny;            // number of row taps (the column taps follow them)
};

// Shared by all threads of the block: geometry and, when they fit, the tap tables.
template <typename scalar_t, typename acc_t>
__device__ RoiTaps<acc_t> load_roi(const scalar_t* __restrict__ roi, int64_t batch_size,
                                   acc_t spatial_scale, int pooled_h, int pooled_w,
                                   int sampling_ratio, bool aligned, int height, int width,
                                   AxisTap<acc_t>* taps) {
  RoiTaps<acc_t> r;
  const int64_t n = roi_batch_index(static_cast<acc_t>(roi[0]), batch_size);
  const bool batch_ok = n >= 0;
  r.n = batch_ok ? n : 0;
  r.g = roi_geometry<acc_t>(static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]),
                            static_cast<acc_t>(roi[3]), static_cast<acc_t>(roi[4]), spatial_scale,
                            pooled_h, pooled_w, sampling_ratio, aligned);
  r.active = batch_ok && r.g.valid && r.g.grid_h > 0 && r.g.grid_w > 0;
  const int64_t ny = static_cast<int64_t>(pooled_h) * r.g.grid_h;
  const int64_t nx = static_cast<int64_t>(pooled_w) * r.g.grid_w;
  r.table = r.active && ny + nx <= kMaxAxisTaps;
  r.ny = static_cast<int>(r.table ? ny : 0);
  __syncthreads();  // the previous ROI's readers are done with the table
  if (r.table) {
    for (int i = threadIdx.x; i < ny + nx; i += blockDim.x) {
      if (i < ny) {
        const int p = i / r.g.grid_h, s = i % r.g.grid_h;
        taps[i] = axis_tap(sample_coord(r.g.start_h, r.g.bin_h, p, s, r.g.grid_h), height);
      } else {
        const int j = i - static_cast<int>(ny);
        const int p = j / r.g.grid_w, s = j % r.g.grid_w;
        taps[i] = axis_tap(sample_coord(r.g.start_w, r.g.bin_w, p, s, r.g.grid_w), width);
      }
    }
  }
  __syncthreads();
  return r;
}

template <typename acc_t>
__device__ __forceinline__ AxisTap<acc_t> row_tap(const RoiTaps<acc_t>& r,
                                                  const AxisTap<acc_t>* taps, int ph, int iy,
                                                  int height) {
  if (r.table) return taps[ph * r.g.grid_h + iy];
  return axis_tap(sample_coord(r.g.start_h, r.g.bin_h, ph, iy, r.g.grid_h), height);
}

template <typename acc_t>
__device__ __forceinline__ AxisTap<acc_t> col_tap(const RoiTaps<acc_t>& r,
                                                  const AxisTap<acc_t>* taps, int pw, int ix,
                                                  int width) {
  if (r.table) return taps[r.ny + pw * r.g.grid_w + ix];
  return axis_tap(sample_coord(r.g.start_w, r.g.bin_w, pw, ix, r.g.grid_w), width);
}

// Element e of a block's [nc, bins] (NCHW) or [bins, nc] (channels-last) tile.
template <bool kNHWC>
__device__ __forceinline__ void split_elem(int64_t e, int nc, int bins, int& c, int& bin) {
  if (kNHWC) {
    bin = static_cast<int>(e / nc);
    c = static_cast<int>(e - static_cast<int64_t>(bin) * nc);
  } else {
    c = static_cast<int>(e / bins);
    bin = static_cast<int>(e - static_cast<int64_t>(c) * bins);
  }
}

template <typename scalar_t, typename acc_t, bool kNHWC>
__global__ void __launch_bounds__(kThreads, 1)
    roi_align_forward_kernel(const scalar_t* __restrict__ input,
                             const scalar_t* __restrict__ rois, scalar_t* __restrict__ output,
                             int64_t num_rois, int64_t batch_size, int64_t channels, int height,
                             int width, int pooled_h, int pooled_w, int sampling_ratio,
                             bool aligned, acc_t spatial_scale, int64_t block_channels) {
  __shared__ AxisTap<acc_t> taps[kMaxAxisTaps];
  const int bins = pooled_h * pooled_w;
  const int64_t hw = static_cast<int64_t>(height) * width;
  const int64_t chunks = (channels + block_channels - 1) / block_channels;
  const int64_t sy = kNHWC ? width * channels : width;
  const int64_t sx = kNHWC ? channels : 1;
  for (int64_t item = blockIdx.x; item < num_rois * chunks; item += gridDim.x) {
    const int64_t k = item / chunks;
    const int64_t c0 = (item - k * chunks) * block_channels;
    const int nc = static_cast<int>(min(block_channels, channels - c0));
    const RoiTaps<acc_t> r = load_roi(rois + k * 5, batch_size, spatial_scale, pooled_h,
                                      pooled_w, sampling_ratio, aligned, height, width, taps);
    const scalar_t* image = input + r.n * channels * hw;
    // nc * bins reaches 32 * 2^26 = 2^31 (channels-last rounds nc up to 32): int64.
    for (int64_t e = threadIdx.x; e < static_cast<int64_t>(nc) * bins; e += blockDim.x) {
      int cl, bin;
      split_elem<kNHWC>(e, nc, bins, cl, bin);
      const int64_t c = c0 + cl;
      const int ph = bin / pooled_w, pw = bin - (bin / pooled_w) * pooled_w;
      acc_t sum = acc_t(0);
      if (r.active) {
        const scalar_t* plane = kNHWC ? image + c : image + c * hw;
        for (int iy = 0; iy < r.g.grid_h; ++iy) {
          const AxisTap<acc_t> ay = row_tap(r, taps, ph, iy, height);
          if (!ay.valid) continue;  // bilinear_from_axes would give an invalid sample
          for (int ix = 0; ix < r.g.grid_w; ++ix) {
            const Bilinear<acc_t> b = bilinear_from_axes(ay, col_tap(r, taps, pw, ix, width));
            if (!b.valid) continue;
            // roi_align_bin's order of operations.
            const acc_t v1 = static_cast<acc_t>(plane[b.y_low * sy + b.x_low * sx]);
            const acc_t v2 = static_cast<acc_t>(plane[b.y_low * sy + b.x_high * sx]);
            const acc_t v3 = static_cast<acc_t>(plane[b.y_high * sy + b.x_low * sx]);
            const acc_t v4 = static_cast<acc_t>(plane[b.y_high * sy + b.x_high * sx]);
            sum += b.w1 * v1 + b.w2 * v2 + b.w3 * v3 + b.w4 * v4;
          }
        }
      }
      const int64_t out = kNHWC ? (k * bins + bin) * channels + c : (k * channels + c) * bins + bin;
      output[out] = static_cast<scalar_t>(sum / r.g.count);
    }
  }
}

template <typename scalar_t, typename acc_t, bool kNHWC>
__global__ void __launch_bounds__(kThreads, 1)
    roi_align_backward_kernel(const scalar_t* __restrict__ grad,
                              const scalar_t* __restrict__ rois, acc_t* __restrict__ grad_input,
                              int64_t num_rois, int64_t batch_size, int64_t channels, int height,
                              int width, int pooled_h, int pooled_w, int sampling_ratio,
                              bool aligned, acc_t spatial_scale, int64_t block_channels) {
  __shared__ AxisTap<acc_t> taps[kMaxAxisTaps];
  const int bins = pooled_h * pooled_w;
  const int64_t hw = static_cast<int64_t>(height) * width;
  const int64_t chunks = (channels + block_channels - 1) / block_channels;
  const int64_t sy = kNHWC ? width * channels : width;
  const int64_t sx = kNHWC ? channels : 1;
  for (int64_t item = blockIdx.x; item < num_rois * chunks; item += gridDim.x) {
    const int64_t k = item / chunks;
    const int64_t c0 = (item - k * chunks) * block_channels;
    const int nc = static_cast<int>(min(block_channels, channels - c0));
    const RoiTaps<acc_t> r = load_roi(rois + k * 5, batch_size, spatial_scale, pooled_h,
                                      pooled_w, sampling_ratio, aligned, height, width, taps);
    if (!r.active) continue;  // uniform over the block: no thread skips a later barrier alone
    acc_t* image = grad_input + r.n * channels * hw;
    // nc * bins reaches 32 * 2^26 = 2^31 (channels-last rounds nc up to 32): int64.
    for (int64_t e = threadIdx.x; e < static_cast<int64_t>(nc) * bins; e += blockDim.x) {
      int cl, bin;
      split_elem<kNHWC>(e, nc, bins, cl, bin);
      const int64_t c = c0 + cl;
      const int ph = bin / pooled_w, pw = bin - (bin / pooled_w) * pooled_w;
      const int64_t gi = kNHWC ? (k * bins + bin) * channels + c : (k * channels + c) * bins + bin;
      const acc_t gv = static_cast<acc_t>(grad[gi]);
      acc_t* plane = kNHWC ? image + c : image + c * hw;
      for (int iy = 0; iy < r.g.grid_h; ++iy) {
        const AxisTap<acc_t> ay = row_tap(r, taps, ph, iy, height);
        if (!ay.valid) continue;
        for (int ix = 0; ix < r.g.grid_w; ++ix) {
          const Bilinear<acc_t> b = bilinear_from_axes(ay, col_tap(r, taps, pw, ix, width));
          if (!b.valid) continue;
          // roi_align_bin_backward's order: grad * w / count.
          atomicAdd(plane + b.y_low * sy + b.x_low * sx, gv * b.w1 / r.g.count);
          atomicAdd(plane + b.y_low * sy + b.x_high * sx, gv * b.w2 / r.g.count);
          atomicAdd(plane + b.y_high * sy + b.x_low * sx, gv * b.w3 / r.g.count);
          atomicAdd(plane + b.y_high * sy + b.x_high * sx, gv * b.w4 / r.g.count);
        }
      }
    }
  }
}

// Channels per block: about kElemsPerBlock outputs; channels-last in whole warps of channels.
int64_t block_channels(int64_t channels, int64_t bins, bool nhwc) {
  int64_t cpb = std::max<int64_t>(1, kElemsPerBlock / bins);
  if (nhwc) cpb = (cpb + 31) / 32 * 32;
  return std::min(cpb, std::max<int64_t>(channels, 1));
}

unsigned int grid_size(int64_t items) {
  // Grid-stride loops take the rest.
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(items, int64_t(1) << 20)));
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_roi_align_inputs(input, rois, spatial_scale, pooled_height, pooled_width,
                         sampling_ratio);
  DeviceGuard guard(input.device());
  const bool cl = roi_align_channels_last(input);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const int64_t K = rois.size(0), C = input.size(1);
  at::Tensor output =
      at::empty({K, C, pooled_height, pooled_width}, input.options().memory_format(fmt));
  if (output.numel() == 0) return output;
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor r = rois.contiguous();
  const int64_t bins = pooled_height * pooled_width;
  const int64_t cpb = block_channels(C, bins, cl);
  const int64_t items = K * ((C + cpb - 1) / cpb);
  const auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto run = [&](auto kernel) {
      launch(kernel, grid_size(items), kThreads, stream, x.const_data_ptr<scalar_t>(),
             r.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), K, x.size(0), C,
             static_cast<int>(x.size(2)), static_cast<int>(x.size(3)),
             static_cast<int>(pooled_height), static_cast<int>(pooled_width),
             static_cast<int>(sampling_ratio), aligned, static_cast<acc_t>(spatial_scale), cpb);
    };
    if (cl) {
      run(roi_align_forward_kernel<scalar_t, acc_t, true>);
    } else {
      run(roi_align_forward_kernel<scalar_t, acc_t, false>);
    }
  });
  return output;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned) {
  check_roi_align_backward_inputs(grad, rois, spatial_scale, pooled_height, pooled_width,
                                  batch_size, channels, height, width, sampling_ratio);
  DeviceGuard guard(grad.device());
  const bool cl = roi_align_channels_last(grad);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto opts = grad.options().memory_format(fmt);
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "_roi_align_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Half and bfloat16 sum in a float32 buffer (accurate, plain float atomics), cast once.
    at::Tensor gin = at::empty({batch_size, channels, height, width},
                               opts.dtype(c10::CppTypeToScalarType<acc_t>::value))
                         .zero_();
    const int64_t K = rois.size(0);
    if (grad.numel() > 0 && gin.numel() > 0) {
      const at::Tensor g = grad.contiguous(fmt);
      const at::Tensor r = rois.contiguous();
      const int64_t bins = pooled_height * pooled_width;
      const int64_t cpb = block_channels(channels, bins, cl);
      const int64_t items = K * ((channels + cpb - 1) / cpb);
      const auto stream = current_stream();
      auto run = [&](auto kernel) {
        launch(kernel, grid_size(items), kThreads, stream, g.const_data_ptr<scalar_t>(),
               r.const_data_ptr<scalar_t>(), gin.mutable_data_ptr<acc_t>(), K, batch_size, channels,
               static_cast<int>(height), static_cast<int>(width), static_cast<int>(pooled_height),
               static_cast<int>(pooled_width), static_cast<int>(sampling_ratio), aligned,
               static_cast<acc_t>(spatial_scale), cpb);
      };
      if (cl) {
        run(roi_align_backward_kernel<scalar_t, acc_t, true>);
      } else {
        run(roi_align_backward_kernel<scalar_t, acc_t, false>);
      }
    }
    result = std::is_same_v<acc_t, scalar_t> ? gin : gin.to(grad.scalar_type());
  });
  return result;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("roi_align", &roi_align_forward_cuda);
  m.impl("_roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace maskrcnn_fast
