// multilevel_roi_align on the CPU: one pass over all ROIs of all pyramid levels.
//
// Forward: ROIs are shared out dynamically among the threads. Per ROI the level, geometry and
// the bilinear corners/weights of every sample are computed once (a "plan") and reused for all
// channels. NCHW maps are read four channels at a time, the footprint of the channels to come
// being prefetched (the rows of a plane are too far apart for the hardware prefetcher: without
// it the loop waits on memory, and is no faster than torchvision's). Maps whose channels are
// contiguous (channels_last) are read a pixel's channels at a time, which the compiler
// vectorises. Both sum the samples of a bin in roi_align_bin's order, so results are bitwise
// those of the shared math (and of torchvision's CPU kernel).
//
// Backward: the threads split the channels, and each walks all ROIs in order, so every gradient
// element receives its additions in one fixed order: deterministic, and the same order as
// torchvision's serial CPU backward (bitwise equal gradients in float32).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "common/multilevel_roi_align_math.h"
#include "common/multilevel_roi_align_checks.h"

namespace maskrcnn_fast {
namespace {

// Samples planned at once for one ROI (about 200 KB of plan in float32): bins are planned in
// chunks of at most this many samples, and a bin with more (huge adaptive grids) is computed
// directly by roi_align_bin.
constexpr int kPlanCap = 4096;
// ROIs a thread takes from the shared counter at a time.
constexpr int64_t kRoiChunk = 4;

// A hint to bring a cache line into L2. On x86 it is a volatile asm: GCC deletes loops whose
// only statements are __builtin_prefetch / _mm_prefetch (they count as side-effect free).
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

// Asks for the footprint's cache lines of a channel plane (unit column stride) ahead of its
// turn: a plane's rows are far apart, so the hardware prefetcher does not see them coming and
// the loop would otherwise wait on memory for each.
template <typename T>
void prefetch_footprint(const T* plane, int64_t sy, const Footprint& fp) {
  constexpr int kLine = 64 / sizeof(T);
  for (int y = fp.y0; y <= fp.y1; ++y) {
    const T* row = plane + y * sy;
    for (int x = fp.x0; x <= fp.x1 + kLine - 1; x += kLine) {
      prefetch_line(row + std::min(x, fp.x1));
    }
  }
}

// Channels whose footprint is requested ahead of their turn (about 1 us of work ahead).
constexpr int64_t kAhead = 8;

// Runs worker.run(k) for every ROI k, one worker (scratch buffers) per thread, the threads
// taking small chunks from a shared counter: ROIs differ in cost (adaptive grids, zero ROIs),
// so a static split would leave a thread idle.
template <typename MakeWorker>
void for_each_roi(int64_t num_rois, const MakeWorker& make_worker) {
  std::atomic<int64_t> next{0};
  const int64_t threads =
      std::min<int64_t>(at::get_num_threads(), (num_rois + kRoiChunk - 1) / kRoiChunk);
  at::parallel_for(0, std::max<int64_t>(threads, 1), 1, [&](int64_t, int64_t) {
    auto worker = make_worker();
    for (;;) {
      const int64_t k0 = next.fetch_add(kRoiChunk);
      if (k0 >= num_rois) break;
      const int64_t k1 = std::min(num_rois, k0 + kRoiChunk);
      for (int64_t k = k0; k < k1; ++k) worker.run(k);
    }
  });
}

template <typename scalar_t>
struct ForwardWorker {
  using acc_t = at::opmath_type<scalar_t>;
  const FeatureLevels<const scalar_t*, acc_t>& f;
  const PoolParams<acc_t>& p;
  std::vector<Sample<acc_t>> plan;
  std::vector<int> bin_end;
  std::vector<acc_t> acc;

  const acc_t* rois;
  scalar_t* output;
  int64_t block;

  ForwardWorker(const FeatureLevels<const scalar_t*, acc_t>& f_, const PoolParams<acc_t>& p_,
                const acc_t* rois_, scalar_t* output_, int64_t block_)
      : f(f_), p(p_), plan(kPlanCap), bin_end(static_cast<size_t>(p_.pooled_h) * p_.pooled_w),
        rois(rois_), output(output_), block(block_) {}

  void run(int64_t k) {
    const acc_t* roi = rois + k * 5;
    scalar_t* out = output + k * block;  // the ROI's [C, PH, PW]
    const int64_t C = p.channels;
    const int nbins = p.pooled_h * p.pooled_w;
    const RoiPlan<acc_t> r = plan_roi(roi, f, p);
    if (!r.valid) {
      std::fill(out, out + C * nbins, scalar_t(0));
      return;
    }
    const int l = r.level;
    const RoiGeometry<acc_t>& g = r.g;
    const scalar_t* base = f.data[l] + r.batch * f.stride_n[l];
    const int H = f.height[l], W = f.width[l];
    const int64_t sc = f.stride_c[l], sy = f.stride_y[l], sx = f.stride_x[l];
    const int per_bin = g.grid_h * g.grid_w;
    if (per_bin > kPlanCap) {
      for (int64_t c = 0; c < C; ++c) {
        for (int b = 0; b < nbins; ++b) {
          out[c * nbins + b] = static_cast<scalar_t>(roi_align_bin<acc_t>(
              base + c * sc, H, W, sy, sx, g, b / p.pooled_w, b % p.pooled_w));
        }
      }
      return;
    }
    const int chunk = std::max(1, kPlanCap / std::max(per_bin, 1));
    for (int b0 = 0; b0 < nbins; b0 += chunk) {
      const int b1 = std::min(nbins, b0 + chunk);
      int n = 0;
      Footprint fp;
      for (int b = b0; b < b1; ++b) {
        n += plan_bin(g, b / p.pooled_w, b % p.pooled_w, H, W, sy, sx, plan.data() + n, fp);
        bin_end[b - b0] = n;
      }
      if (sc == 1 && C > 1) {
        pool_channels_last(base, C, b0, b1, g.count, out, nbins);
      } else {
        pool_planar(base, C, sc, sy, sx, fp, b0, b1, g.count, out, nbins);
      }
    }
  }

  // G channels at a time: each sample's offsets and weights are loaded once for G planes,
  // and the G independent sums keep the FPU busy while loads are in flight.
  template <int G>
  void pool_planar_group(const scalar_t* const* planes, scalar_t* const* outs, int b0, int b1,
                         acc_t count) {
    const Sample<acc_t>* s = plan.data();
    int i = 0;
    for (int b = b0; b < b1; ++b) {
      acc_t sum[G];
      for (int j = 0; j < G; ++j) sum[j] = acc_t(0);
      for (const int e = bin_end[b - b0]; i < e; ++i) {
        const Sample<acc_t> si = s[i];
        for (int j = 0; j < G; ++j) sum[j] += sample_value(planes[j], si);
      }
      for (int j = 0; j < G; ++j) outs[j][b] = static_cast<scalar_t>(sum[j] / count);
    }
  }

  void pool_planar(const scalar_t* base, int64_t C, int64_t sc, int64_t sy, int64_t sx,
                   const Footprint& fp, int b0, int b1, acc_t count, scalar_t* out, int nbins) {
    constexpr int kGroup = 4;
    const bool prefetch = sx == 1 && fp.y0 <= fp.y1;
    if (prefetch) {
      for (int64_t c = 0; c < std::min(C, kAhead); ++c) prefetch_footprint(base + c * sc, sy, fp);
    }
    for (int64_t c0 = 0; c0 < C; c0 += kGroup) {
      const int g = static_cast<int>(std::min<int64_t>(kGroup, C - c0));
      const scalar_t* planes[kGroup];
      scalar_t* outs[kGroup];
      for (int j = 0; j < g; ++j) {
        const int64_t c = c0 + j;
        planes[j] = base + c * sc;
        outs[j] = out + c * nbins;
        if (prefetch && c + kAhead < C) prefetch_footprint(planes[j] + kAhead * sc, sy, fp);
      }
      if (g == kGroup) {
        pool_planar_group<kGroup>(planes, outs, b0, b1, count);
      } else {
        for (int j = 0; j < g; ++j) pool_planar_group<1>(planes + j, outs + j, b0, b1, count);
      }
    }
  }

  void pool_channels_last(const scalar_t* base, int64_t C, int b0, int b1, acc_t count,
                          scalar_t* out, int nbins) {
    acc.resize(static_cast<size_t>(C));
    acc_t* __restrict a = acc.data();
    const Sample<acc_t>* s = plan.data();
    int i = 0;
    for (int b = b0; b < b1; ++b) {
      std::fill(a, a + C, acc_t(0));
      for (const int e = bin_end[b - b0]; i < e; ++i) {
        const Sample<acc_t> si = s[i];
        for (int64_t c = 0; c < C; ++c) a[c] += sample_value(base + c, si);
      }
      for (int64_t c = 0; c < C; ++c) out[c * nbins + b] = static_cast<scalar_t>(a[c] / count);
    }
  }
};

// Adds the gradient of every ROI to channels [c0, c1) of the maps' gradients.
template <typename scalar_t>
struct BackwardWorker {
  using acc_t = at::opmath_type<scalar_t>;
  const FeatureLevels<acc_t*, acc_t>& f;
  const PoolParams<acc_t>& p;
  const acc_t* rois;
  const scalar_t* grad;  // [K, C, PH, PW]
  int64_t c0, c1;
  std::vector<Sample<acc_t>> plan;
  std::vector<int> bin_end;

  BackwardWorker(const FeatureLevels<acc_t*, acc_t>& f_, const PoolParams<acc_t>& p_,
                 const acc_t* rois_, const scalar_t* grad_, int64_t c0_, int64_t c1_)
      : f(f_), p(p_), rois(rois_), grad(grad_), c0(c0_), c1(c1_), plan(kPlanCap),
        bin_end(static_cast<size_t>(p_.pooled_h) * p_.pooled_w) {}

  void run(int64_t k) {
    const RoiPlan<acc_t> r = plan_roi(rois + k * 5, f, p);
    if (!r.valid) return;
    const int l = r.level;
    const RoiGeometry<acc_t>& g = r.g;
    const int H = f.height[l], W = f.width[l];
    const int nbins = p.pooled_h * p.pooled_w;
    const int64_t sc = f.stride_c[l], sy = f.stride_y[l], sx = f.stride_x[l];
    acc_t* base = f.data[l] + r.batch * f.stride_n[l];
    const scalar_t* gk = grad + k * p.channels * nbins;
    const int per_bin = g.grid_h * g.grid_w;
    if (per_bin > kPlanCap) {
      for (int64_t c = c0; c < c1; ++c) {
        acc_t* plane = base + c * sc;
        auto add = [plane](int64_t o, acc_t v) { plane[o] += v; };
        for (int b = 0; b < nbins; ++b) {
          roi_align_bin_backward(static_cast<acc_t>(gk[c * nbins + b]), H, W, sy, sx, g,
                                 b / p.pooled_w, b % p.pooled_w, add);
        }
      }
      return;
    }
    // As the forward: bins planned in chunks, then channel by channel with the footprints of
    // the channels to come prefetched. Each gradient element receives its additions in ROI,
    // bin, sample order whatever the chunking and the thread count.
    const int chunk = std::max(1, kPlanCap / std::max(per_bin, 1));
    for (int b0 = 0; b0 < nbins; b0 += chunk) {
      const int b1 = std::min(nbins, b0 + chunk);
      int n = 0;
      Footprint fp;
      for (int b = b0; b < b1; ++b) {
        n += plan_bin(g, b / p.pooled_w, b % p.pooled_w, H, W, sy, sx, plan.data() + n, fp);
        bin_end[b - b0] = n;
      }
      const bool prefetch = sx == 1 && fp.y0 <= fp.y1;
      for (int64_t c = c0; prefetch && c < std::min(c1, c0 + kAhead); ++c) {
        prefetch_footprint(base + c * sc, sy, fp);
      }
      for (int64_t c = c0; c < c1; ++c) {
        acc_t* plane = base + c * sc;
        if (prefetch && c + kAhead < c1) prefetch_footprint(plane + kAhead * sc, sy, fp);
        auto add = [plane](int64_t o, acc_t v) { plane[o] += v; };
        int i = 0;
        for (int b = b0; b < b1; ++b) {
          const acc_t gv = static_cast<acc_t>(gk[c * nbins + b]);
          for (const int e = bin_end[b - b0]; i < e; ++i) {
            sample_backward(gv, g.count, plan[i], add);
          }
        }
      }
    }
  }
};

at::Tensor multilevel_roi_align_cpu(at::TensorList features, const at::Tensor& rois,
                                    c10::ArrayRef<double> scales, int64_t pooled_height,
                                    int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                    int64_t canonical_scale, int64_t canonical_level,
                                    double eps) {
  check_multilevel_roi_align(features, rois, scales, pooled_height, pooled_width, sampling_ratio,
                             canonical_scale, canonical_level, eps);
  const int64_t K = rois.size(0), N = features[0].size(0), C = features[0].size(1);
  at::Tensor out = at::empty({K, C, pooled_height, pooled_width}, features[0].options());
  if (out.numel() == 0) return out;
  const at::Tensor rois_c = rois_for_kernel(rois, features[0].scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features[0].scalar_type(), "multilevel_roi_align_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        check_batch_indices<acc_t>(rois_c, N);
        FeatureLevels<const scalar_t*, acc_t> f;
        set_levels(f, features, scales,
                   [](const at::Tensor& x) { return x.const_data_ptr<scalar_t>(); });
        const PoolParams<acc_t> p =
            make_pool_params<acc_t>(N, C, pooled_height, pooled_width, sampling_ratio, aligned,
                                    canonical_scale, canonical_level, eps, false);
        const acc_t* roi_ptr = rois_c.const_data_ptr<acc_t>();
        scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
        const int64_t block = C * pooled_height * pooled_width;
        for_each_roi(K, [&] { return ForwardWorker<scalar_t>(f, p, roi_ptr, out_ptr, block); });
      });
  return out;
}

std::vector<at::Tensor> multilevel_roi_align_backward_cpu(
    const at::Tensor& grad, const at::Tensor& rois, c10::ArrayRef<double> scales,
    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned,
    int64_t canonical_scale, int64_t canonical_level, double eps, int64_t batch_size,
    int64_t channels, c10::IntArrayRef heights, c10::IntArrayRef widths) {
  check_multilevel_roi_align_backward(grad, rois, scales, pooled_height, pooled_width,
                                      sampling_ratio, canonical_scale, canonical_level, eps,
                                      batch_size, channels, heights, widths);
  const int64_t K = rois.size(0), L = static_cast<int64_t>(heights.size());
  const at::ScalarType dtype = grad.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  // Reduced types accumulate in float and are rounded once at the end.
  std::vector<at::Tensor> acc_grads;
  for (int64_t l = 0; l < L; ++l) {
    acc_grads.push_back(
        at::zeros({batch_size, channels, heights[l], widths[l]}, grad.options().dtype(acc_dtype)));
  }
  const int64_t nbins = pooled_height * pooled_width;
  if (K > 0 && channels > 0 && nbins > 0) {
    const at::Tensor rois_c = rois_for_kernel(rois, dtype);
    const at::Tensor grad_c = grad.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, dtype, "multilevel_roi_align_backward_cpu", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          check_batch_indices<acc_t>(rois_c, batch_size);
          FeatureLevels<acc_t*, acc_t> f;
          set_levels(f, acc_grads, scales,
                     [](const at::Tensor& x) { return x.mutable_data_ptr<acc_t>(); });
          const PoolParams<acc_t> p =
              make_pool_params<acc_t>(batch_size, channels, pooled_height, pooled_width,
                                      sampling_ratio, aligned, canonical_scale, canonical_level,
                                      eps, false);
          const acc_t* roi_ptr = rois_c.const_data_ptr<acc_t>();
          const scalar_t* g_ptr = grad_c.const_data_ptr<scalar_t>();
          at::parallel_for(0, channels, 1, [&](int64_t c0, int64_t c1) {
            BackwardWorker<scalar_t> w(f, p, roi_ptr, g_ptr, c0, c1);
            for (int64_t k = 0; k < K; ++k) w.run(k);
          });
        });
  }
  std::vector<at::Tensor> grads;
  for (auto& a : acc_grads) grads.push_back(a.scalar_type() == dtype ? a : a.to(dtype));
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("multilevel_roi_align", &multilevel_roi_align_cpu);
  m.impl("_multilevel_roi_align_backward", &multilevel_roi_align_backward_cpu);
}

}  // namespace maskrcnn_fast
