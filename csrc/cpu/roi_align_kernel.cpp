// ROIAlign on the CPU: forward and backward, NCHW and channels-last.
//
// The geometry of a ROI and the bilinear taps (corner offsets and weights) of its samples come
// from common/roi_align_math.h and are computed once per ROI, then shared by every channel.
// The sums run in roi_align_bin's order (per output element: samples row-major, corners 1..4),
// so results are bitwise those of the shared math and of torchvision's float32/float64 kernels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/roi_align_checks.h"
#include "common/roi_align_math.h"

namespace maskrcnn_fast {
namespace {

// Taps gathered per round: bounds the scratch memory of one thread whatever the sampling grid.
constexpr int64_t kMaxTaps = 4096;

template <typename acc_t>
struct Tap {
  int64_t o1, o2, o3, o4;  // element offsets of the corners from the image's first element
  acc_t w1, w2, w3, w4;
};

// A run of consecutive valid taps that all belong to output bin `bin`.
struct Span {
  int64_t bin, begin, end;
};

// Walks the samples of one ROI bin by bin (row-major inside a bin, as roi_align_bin does) and
// hands the valid taps to `consume(taps, spans)` in rounds of at most kMaxTaps samples. A bin
// with more samples than that is split over several rounds; its spans keep the sample order.
template <typename acc_t, typename Consume>
void for_each_tap_round(const RoiGeometry<acc_t>& g, int pooled_h, int pooled_w, int height,
                        int width, int64_t sy, int64_t sx, std::vector<Tap<acc_t>>& taps,
                        std::vector<Span>& spans, Consume consume) {
  const int64_t per_bin = static_cast<int64_t>(g.grid_h) * g.grid_w;
  taps.clear();
  spans.clear();
  int64_t samples = 0;  // samples (valid or not) visited in the current round
  const int64_t bins = static_cast<int64_t>(pooled_h) * pooled_w;
  for (int64_t bin = 0; bin < bins; ++bin) {
    const int ph = static_cast<int>(bin / pooled_w);
    const int pw = static_cast<int>(bin % pooled_w);
    for (int64_t s = 0; s < per_bin;) {
      if (samples == kMaxTaps) {
        consume(taps, spans);
        taps.clear();
        spans.clear();
        samples = 0;
      }
      const int64_t stop = std::min(per_bin, s + (kMaxTaps - samples));
      const int64_t first = static_cast<int64_t>(taps.size());
      for (; s < stop; ++s) {
        const int iy = static_cast<int>(s / g.grid_w);
        const int ix = static_cast<int>(s % g.grid_w);
        const acc_t y = sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h);
        const acc_t x = sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w);
        // The CUDA kernel's decomposition (tables of row and column taps), bitwise the same
        // as bilinear(y, x, height, width); computing it here lets the CPU tests check it.
        const Bilinear<acc_t> b =
            bilinear_from_axes(axis_tap(y, height), axis_tap(x, width));
        ++samples;
        if (!b.valid) continue;
        taps.push_back({b.y_low * sy + b.x_low * sx, b.y_low * sy + b.x_high * sx,
                        b.y_high * sy + b.x_low * sx, b.y_high * sy + b.x_high * sx, b.w1, b.w2,
                        b.w3, b.w4});
      }
      const int64_t last = static_cast<int64_t>(taps.size());
      if (last > first) spans.push_back({bin, first, last});
    }
  }
  if (!spans.empty()) consume(taps, spans);
}

template <typename acc_t, typename scalar_t>
RoiGeometry<acc_t> geometry_of(const scalar_t* roi, double spatial_scale, int pooled_h,
                               int pooled_w, int sampling_ratio, bool aligned) {
  return roi_geometry<acc_t>(static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]),
                             static_cast<acc_t>(roi[3]), static_cast<acc_t>(roi[4]),
                             static_cast<acc_t>(spatial_scale), pooled_h, pooled_w,
                             sampling_ratio, aligned);
}

// The number of channel blocks a ROI is cut into, so that few ROIs still use every thread.
int64_t channel_blocks(int64_t rois, int64_t channels, int64_t min_block) {
  const int64_t threads = at::get_num_threads();
  if (rois >= 4 * threads || channels <= min_block) return 1;
  const int64_t want = (4 * threads + rois - 1) / rois;
  return std::max<int64_t>(1, std::min(want, channels / min_block));
}

// dst[n][j][i] = src[n][i][j] for i < I, j < J, converting the type on the way: NCHW <-> NHWC
// (I, J = C, H*W or H*W, C). 32x32 tiles: a tile reads 32 short rows and writes 32 short rows,
// all in L1, which runs near memcpy speed where a generic strided copy does not.
template <typename src_t, typename dst_t>
void transpose_planes(const src_t* src, dst_t* dst, int64_t N, int64_t I, int64_t J) {
  constexpr int64_t kTile = 32;
  const int64_t jtiles = (J + kTile - 1) / kTile;
  at::parallel_for(0, N * jtiles, 16, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / jtiles;
      const int64_t j0 = (item % jtiles) * kTile, j1 = std::min(J, j0 + kTile);
      const src_t* s0 = src + n * I * J;
      dst_t* d0 = dst + n * I * J;
      for (int64_t i0 = 0; i0 < I; i0 += kTile) {
        const int64_t i1 = std::min(I, i0 + kTile);
        for (int64_t j = j0; j < j1; ++j) {
          for (int64_t i = i0; i < i1; ++i) d0[j * I + i] = static_cast<dst_t>(s0[i * J + j]);
        }
      }
    }
  });
}

// On an NCHW map the samples of one channel are scattered over many cache lines of which a few
// bytes are used; channels-last reads (or, backward, writes) whole runs of channels per sample.
// Once there are more than about pixels/8 samples (proposals on an FPN level), one transpose
// of the map costs less than the wasted lines. Adaptive grids are counted as 1x1.
bool work_channels_last(int64_t rois, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                        int64_t N, int64_t C, int64_t H, int64_t W) {
  const int64_t grid = sampling_ratio > 0 ? sampling_ratio * sampling_ratio : 1;
  return C >= 16 && 8 * rois * pooled_h * pooled_w * grid >= N * H * W;
}

// channels_last: the layout of `input` (and of the sums); out_channels_last: that of `output`.
template <typename scalar_t>
void forward_impl(const at::Tensor& input, const at::Tensor& rois, at::Tensor& output,
                  bool channels_last, bool out_channels_last, double spatial_scale, int pooled_h,
                  int pooled_w, int sampling_ratio, bool aligned) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = rois.size(0), C = input.size(1);
  const int height = static_cast<int>(input.size(2)), width = static_cast<int>(input.size(3));
  const int64_t hw = static_cast<int64_t>(height) * width;
  const int64_t bins = static_cast<int64_t>(pooled_h) * pooled_w;
  // Offsets of a pixel's first channel: NCHW rows of W, NHWC rows of W*C.
  const int64_t sy = channels_last ? width * C : width;
  const int64_t sx = channels_last ? C : 1;
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  const scalar_t* roi_data = rois.const_data_ptr<scalar_t>();
  scalar_t* out = output.mutable_data_ptr<scalar_t>();
  const int64_t nblk = channel_blocks(K, C, 16);
  const int64_t blk = (C + nblk - 1) / nblk;

  at::parallel_for(0, K * nblk, 1, [&](int64_t begin, int64_t end) {
    std::vector<Tap<acc_t>> taps;
    std::vector<Span> spans;
    std::vector<acc_t> acc;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / nblk;
      const int64_t c0 = (item % nblk) * blk, c1 = std::min(C, c0 + blk), nc = c1 - c0;
      if (nc <= 0) continue;
      const scalar_t* roi = roi_data + k * 5;
      const int64_t n = static_cast<int64_t>(roi[0]);
      const auto g = geometry_of<acc_t>(roi, spatial_scale, pooled_h, pooled_w, sampling_ratio,
                                        aligned);
      // acc: [nc, bins] for NCHW (a channel walks its bins), [bins, nc] for NHWC.
      acc.assign(nc * bins, acc_t(0));
      if (g.valid) {
        const scalar_t* image = in + n * C * hw;
        for_each_tap_round(g, pooled_h, pooled_w, height, width, sy, sx, taps, spans,
                           [&](const std::vector<Tap<acc_t>>& t, const std::vector<Span>& sp) {
          if (!channels_last) {
            for (int64_t c = 0; c < nc; ++c) {
              const scalar_t* plane = image + (c0 + c) * hw;
              acc_t* a = acc.data() + c * bins;
              for (const Span& s : sp) {
                acc_t sum = a[s.bin];
                for (int64_t i = s.begin; i < s.end; ++i) {
                  const Tap<acc_t>& p = t[i];
                  sum += p.w1 * static_cast<acc_t>(plane[p.o1]) +
                         p.w2 * static_cast<acc_t>(plane[p.o2]) +
                         p.w3 * static_cast<acc_t>(plane[p.o3]) +
                         p.w4 * static_cast<acc_t>(plane[p.o4]);
                }
                a[s.bin] = sum;
              }
            }
          } else {
            for (const Span& s : sp) {
              acc_t* __restrict__ a = acc.data() + s.bin * nc;
              for (int64_t i = s.begin; i < s.end; ++i) {
                const Tap<acc_t>& p = t[i];
                const scalar_t* __restrict__ v1 = image + p.o1 + c0;
                const scalar_t* __restrict__ v2 = image + p.o2 + c0;
                const scalar_t* __restrict__ v3 = image + p.o3 + c0;
                const scalar_t* __restrict__ v4 = image + p.o4 + c0;
                const acc_t w1 = p.w1, w2 = p.w2, w3 = p.w3, w4 = p.w4;
                for (int64_t c = 0; c < nc; ++c) {
                  a[c] += w1 * static_cast<acc_t>(v1[c]) + w2 * static_cast<acc_t>(v2[c]) +
                          w3 * static_cast<acc_t>(v3[c]) + w4 * static_cast<acc_t>(v4[c]);
                }
              }
            }
          }
        });
      }
      // acc element (c, bin) and output element (k, c0 + c, bin), in either layout.
      const int64_t a_c = channels_last ? 1 : bins, a_bin = channels_last ? nc : 1;
      const int64_t o_c = out_channels_last ? 1 : bins, o_bin = out_channels_last ? C : 1;
      scalar_t* o = out + k * C * bins + c0 * o_c;
      if (channels_last == out_channels_last) {
        for (int64_t i = 0; i < nc * bins; ++i) o[i] = static_cast<scalar_t>(acc[i] / g.count);
      } else {
        for (int64_t c = 0; c < nc; ++c) {
          for (int64_t bin = 0; bin < bins; ++bin) {
            o[c * o_c + bin * o_bin] = static_cast<scalar_t>(acc[c * a_c + bin * a_bin] / g.count);
          }
        }
      }
    }
  });
}

// Deterministic: each thread owns a block of channels of every image and walks all ROIs in
// order, so every element of grad_input receives its terms in one fixed order (torchvision's).
// channels_last: the layout of grad_in (and of grad when grad_channels_last).
template <typename scalar_t, typename acc_t>
void backward_impl(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_in,
                   bool grad_channels_last, bool channels_last, double spatial_scale,
                   int pooled_h, int pooled_w, int sampling_ratio, bool aligned) {
  const int64_t K = rois.size(0), C = grad_in.size(1);
  const int height = static_cast<int>(grad_in.size(2)), width = static_cast<int>(grad_in.size(3));
  const int64_t hw = static_cast<int64_t>(height) * width;
  const int64_t bins = static_cast<int64_t>(pooled_h) * pooled_w;
  const int64_t sy = channels_last ? width * C : width;
  const int64_t sx = channels_last ? C : 1;
  const scalar_t* gr = grad.const_data_ptr<scalar_t>();
  const scalar_t* roi_data = rois.const_data_ptr<scalar_t>();
  acc_t* gin = grad_in.mutable_data_ptr<acc_t>();
  const int64_t threads = at::get_num_threads();
  const int64_t min_block = channels_last ? 16 : 1;
  const int64_t nblk = std::max<int64_t>(1, std::min(threads, C / min_block));
  const int64_t blk = (C + nblk - 1) / nblk;

  at::parallel_for(0, nblk, 1, [&](int64_t begin, int64_t end) {
    std::vector<Tap<acc_t>> taps;
    std::vector<Span> spans;
    std::vector<acc_t> gcol;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t c0 = item * blk, c1 = std::min(C, c0 + blk), nc = c1 - c0;
      gcol.resize(nc);
      if (nc <= 0) continue;
      for (int64_t k = 0; k < K; ++k) {
        const scalar_t* roi = roi_data + k * 5;
        const int64_t n = static_cast<int64_t>(roi[0]);
        const auto g = geometry_of<acc_t>(roi, spatial_scale, pooled_h, pooled_w,
                                          sampling_ratio, aligned);
        if (!g.valid) continue;
        acc_t* image = gin + n * C * hw;
        const acc_t count = g.count;
        for_each_tap_round(g, pooled_h, pooled_w, height, width, sy, sx, taps, spans,
                           [&](const std::vector<Tap<acc_t>>& t, const std::vector<Span>& sp) {
          if (!channels_last) {
            for (int64_t c = c0; c < c1; ++c) {
              acc_t* plane = image + c * hw;
              const scalar_t* g_row = gr + (k * C + c) * bins;
              for (const Span& s : sp) {
                const acc_t gv = static_cast<acc_t>(g_row[s.bin]);
                for (int64_t i = s.begin; i < s.end; ++i) {
                  const Tap<acc_t>& p = t[i];
                  // roi_align_bin_backward's order: grad * w / count, corners 1..4.
                  plane[p.o1] += gv * p.w1 / count;
                  plane[p.o2] += gv * p.w2 / count;
                  plane[p.o3] += gv * p.w3 / count;
                  plane[p.o4] += gv * p.w4 / count;
                }
              }
            }
          } else {
            for (const Span& s : sp) {
              // This bin's gradient for the block's channels, contiguous and in acc_t.
              if (grad_channels_last) {
                const scalar_t* g_row = gr + (k * bins + s.bin) * C + c0;
                for (int64_t c = 0; c < nc; ++c) gcol[c] = static_cast<acc_t>(g_row[c]);
              } else {
                const scalar_t* g_col = gr + (k * C + c0) * bins + s.bin;
                for (int64_t c = 0; c < nc; ++c) gcol[c] = static_cast<acc_t>(g_col[c * bins]);
              }
              const acc_t* __restrict__ gv = gcol.data();
              for (int64_t i = s.begin; i < s.end; ++i) {
                const Tap<acc_t>& p = t[i];
                acc_t* d1 = image + p.o1 + c0;
                acc_t* d2 = image + p.o2 + c0;
                acc_t* d3 = image + p.o3 + c0;
                acc_t* d4 = image + p.o4 + c0;
                // Corners may coincide at the map's edge: one corner per loop keeps them apart.
                for (int64_t c = 0; c < nc; ++c) d1[c] += gv[c] * p.w1 / count;
                for (int64_t c = 0; c < nc; ++c) d2[c] += gv[c] * p.w2 / count;
                for (int64_t c = 0; c < nc; ++c) d3[c] += gv[c] * p.w3 / count;
                for (int64_t c = 0; c < nc; ++c) d4[c] += gv[c] * p.w4 / count;
              }
            }
          }
        });
      }
    }
  });
}

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                 double spatial_scale, int64_t pooled_height,
                                 int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_roi_align_inputs(input, rois, spatial_scale, pooled_height, pooled_width,
                         sampling_ratio);
  const bool cl = roi_align_channels_last(input);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const int64_t K = rois.size(0), C = input.size(1);
  at::Tensor output =
      at::empty({K, C, pooled_height, pooled_width}, input.options().memory_format(fmt));
  if (output.numel() == 0) return output;
  const at::Tensor r = rois.contiguous();
  const bool work_cl = cl || work_channels_last(K, pooled_height, pooled_width, sampling_ratio,
                                                input.size(0), C, input.size(2), input.size(3));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align", [&] {
    check_batch_indices<scalar_t>(r, input.size(0));
    at::Tensor x = input.contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    if (work_cl && !cl) {
      at::Tensor t = at::empty_like(x, at::MemoryFormat::ChannelsLast);
      transpose_planes(x.const_data_ptr<scalar_t>(), t.mutable_data_ptr<scalar_t>(), x.size(0), C,
                       x.size(2) * x.size(3));
      x = t;
    }
    forward_impl<scalar_t>(x, r, output, work_cl, cl, spatial_scale,
                           static_cast<int>(pooled_height), static_cast<int>(pooled_width),
                           static_cast<int>(sampling_ratio), aligned);
  });
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned) {
  check_roi_align_backward_inputs(grad, rois, spatial_scale, pooled_height, pooled_width,
                                  batch_size, channels, height, width, sampling_ratio);
  const bool cl = roi_align_channels_last(grad);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto opts = grad.options().memory_format(fmt);
  if (grad.numel() == 0 || batch_size * channels * height * width == 0) {
    at::Tensor out = at::empty({batch_size, channels, height, width}, opts).zero_();
    if (rois.size(0) > 0) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                      "_roi_align_backward",
                                      [&] { check_batch_indices<scalar_t>(rois.contiguous(), batch_size); });
    }
    return out;
  }
  const at::Tensor g = grad.contiguous(fmt);
  const at::Tensor r = rois.contiguous();
  const bool work_cl = cl || work_channels_last(r.size(0), pooled_height, pooled_width,
                                                sampling_ratio, batch_size, channels, height,
                                                width);
  const auto work_fmt = work_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "_roi_align_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    check_batch_indices<scalar_t>(r, batch_size);
    // Sums in acc_t (float32 for half and bfloat16), rounded once at the end. (at::zeros would
    // drop the memory format of the options.)
    at::Tensor gin = at::empty({batch_size, channels, height, width},
                               grad.options()
                                   .dtype(c10::CppTypeToScalarType<acc_t>::value)
                                   .memory_format(work_fmt))
                         .zero_();
    backward_impl<scalar_t, acc_t>(g, r, gin, cl, work_cl, spatial_scale,
                                   static_cast<int>(pooled_height),
                                   static_cast<int>(pooled_width),
                                   static_cast<int>(sampling_ratio), aligned);
    if (work_cl == cl && std::is_same_v<acc_t, scalar_t>) {
      result = gin;
    } else if (work_cl == cl) {
      result = gin.to(grad.scalar_type());
    } else {  // summed channels-last, returned NCHW like grad
      result = at::empty({batch_size, channels, height, width}, grad.options());
      transpose_planes(gin.const_data_ptr<acc_t>(), result.mutable_data_ptr<scalar_t>(),
                       batch_size, height * width, channels);
    }
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("roi_align", &roi_align_forward_cpu);
  m.impl("_roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace maskrcnn_fast
