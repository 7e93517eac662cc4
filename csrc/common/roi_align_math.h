#pragma once
// ROIAlign arithmetic, shared by roi_align and multilevel_roi_align, CPU and CUDA.
//
// Semantics are torchvision's roi_align (He et al., Mask R-CNN, sec. 3): each output bin
// averages grid_h x grid_w bilinear samples taken at the centres of a regular sub-grid of the
// bin. The order of float operations follows torchvision's so that float32 and float64 results
// are bitwise equal to it (both sides are compiled without FMA contraction).
#include "common/macros.h"

namespace maskrcnn_fast {

// Beyond this many samples per bin side an adaptive grid stops growing. Only boxes whose bins
// span more than this many feature pixels are affected (torchvision would loop for hours on
// them); it keeps a huge finite box from turning into an endless kernel.
constexpr int kMaxAdaptiveGrid = 1024;

template <typename T>
struct RoiGeometry {
  T start_h, start_w;  // top-left corner of the ROI on the feature map
  T bin_h, bin_w;      // size of one output bin
  int grid_h, grid_w;  // samples per bin along each side
  T count;             // grid_h * grid_w, at least 1: the divisor of the average
  bool valid;          // false for non-finite coordinates: the ROI's output is zero
};

template <typename T>
MF_HOST_DEVICE bool mf_isfinite(T v) {
  // v - v is NaN for NaN and +-Inf, 0 otherwise; works for every floating type on both sides.
  return (v - v) == (v - v);
}

MF_HOST_DEVICE float mf_floor(float v) { return floorf(v); }
MF_HOST_DEVICE double mf_floor(double v) { return floor(v); }

// Batch index of a ROI (rois[k, 0], in the accumulation type), or -1 unless it is an integer in
// [0, batch) (NaN and Inf included). The one rule of roi_align and multilevel_roi_align: the CPU
// kernels raise for -1 (check_batch_indices), the CUDA kernels write zeros for that ROI.
template <typename acc_t>
MF_HOST_DEVICE int64_t roi_batch_index(acc_t v, int64_t batch) {
  if (!(v >= acc_t(0)) || !(v < static_cast<acc_t>(batch)) || !(mf_floor(v) == v)) return -1;
  return static_cast<int64_t>(v);
}

// roi: x1, y1, x2, y2 in input pixels (already converted to the accumulation type T).
template <typename T>
MF_HOST_DEVICE RoiGeometry<T> roi_geometry(T x1, T y1, T x2, T y2, T spatial_scale,
                                           int pooled_h, int pooled_w, int sampling_ratio,
                                           bool aligned) {
  RoiGeometry<T> g;
  g.valid = mf_isfinite(x1) && mf_isfinite(y1) && mf_isfinite(x2) && mf_isfinite(y2);
  // aligned=True shifts by -0.5 px: pixel centres, not corners.
  const T offset = aligned ? T(0.5) : T(0);
  g.start_w = x1 * spatial_scale - offset;
  g.start_h = y1 * spatial_scale - offset;
  const T end_w = x2 * spatial_scale - offset;
  const T end_h = y2 * spatial_scale - offset;
  T roi_w = end_w - g.start_w;
  T roi_h = end_h - g.start_h;
  if (!aligned) {
    // Legacy behaviour: malformed ROIs are forced to be 1x1.
    roi_w = mf_max(roi_w, T(1));
    roi_h = mf_max(roi_h, T(1));
  }
  // Finite corners can still overflow once scaled or subtracted (inf - inf = NaN samples).
  g.valid = g.valid && mf_isfinite(roi_w) && mf_isfinite(roi_h);
  g.bin_h = roi_h / static_cast<T>(pooled_h);
  g.bin_w = roi_w / static_cast<T>(pooled_w);
  if (sampling_ratio > 0) {
    g.grid_h = sampling_ratio;
    g.grid_w = sampling_ratio;
  } else if (g.valid) {
    // ceil of a negative size (inverted aligned ROI) is <= 0: no samples, count 1, output 0.
    // Clamped below before the int conversion: a huge negative float does not fit an int.
    const T gh = ceil(roi_h / static_cast<T>(pooled_h));
    const T gw = ceil(roi_w / static_cast<T>(pooled_w));
    g.grid_h = gh > T(kMaxAdaptiveGrid) ? kMaxAdaptiveGrid : (gh > T(0) ? static_cast<int>(gh) : 0);
    g.grid_w = gw > T(kMaxAdaptiveGrid) ? kMaxAdaptiveGrid : (gw > T(0) ? static_cast<int>(gw) : 0);
  } else {
    g.grid_h = 0;
    g.grid_w = 0;
  }
  if (!g.valid) {
    g.grid_h = 0;
    g.grid_w = 0;
  }
  const int n = g.grid_h * g.grid_w;
  g.count = static_cast<T>(n > 1 ? n : 1);
  return g;
}

// The sample position along one side: bin p, sample i of `grid` samples.
template <typename T>
MF_HOST_DEVICE T sample_coord(T start, T bin, int p, int i, int grid) {
  return start + static_cast<T>(p) * bin + static_cast<T>(i + T(0.5)) * bin / static_cast<T>(grid);
}

// Bilinear interpolation corners and weights of one sample. A sample more than one pixel
// outside the map contributes nothing (valid=false); the indices are then 0, so a caller that
// forgets the flag still reads in bounds.
template <typename T>
struct Bilinear {
  int y_low, y_high, x_low, x_high;
  T w1, w2, w3, w4;  // (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)
  bool valid;
};

template <typename T>
MF_HOST_DEVICE Bilinear<T> bilinear(T y, T x, int height, int width) {
  Bilinear<T> b;
  // Written as !(inside) so that a NaN coordinate is outside too: it must never reach the
  // int conversion below.
  if (!(y >= T(-1) && y <= static_cast<T>(height) && x >= T(-1) && x <= static_cast<T>(width)) ||
      height <= 0 || width <= 0) {
    b.y_low = b.y_high = b.x_low = b.x_high = 0;
    b.w1 = b.w2 = b.w3 = b.w4 = T(0);
    b.valid = false;
    return b;
  }
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  b.y_low = static_cast<int>(y);
  b.x_low = static_cast<int>(x);
  if (b.y_low >= height - 1) {
    b.y_high = b.y_low = height - 1;
    y = static_cast<T>(b.y_low);
  } else {
    b.y_high = b.y_low + 1;
  }
  if (b.x_low >= width - 1) {
    b.x_high = b.x_low = width - 1;
    x = static_cast<T>(b.x_low);
  } else {
    b.x_high = b.x_low + 1;
  }
  const T ly = y - static_cast<T>(b.y_low);
  const T lx = x - static_cast<T>(b.x_low);
  const T hy = T(1) - ly;
  const T hx = T(1) - lx;
  b.w1 = hy * hx;
  b.w2 = hy * lx;
  b.w3 = ly * hx;
  b.w4 = ly * lx;
  b.valid = true;
  return b;
}

// One output bin of one channel. `plane` points at (n, c, 0, 0); sy and sx are the element
// strides of a row and a column (W and 1 for NCHW, W*C and C for NHWC).
template <typename acc_t, typename scalar_t>
MF_HOST_DEVICE acc_t roi_align_bin(const scalar_t* plane, int height, int width, int64_t sy,
                                   int64_t sx, const RoiGeometry<acc_t>& g, int ph, int pw) {
  acc_t sum = acc_t(0);
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const acc_t y = sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const acc_t x = sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w);
      const Bilinear<acc_t> b = bilinear(y, x, height, width);
      if (!b.valid) continue;
      const acc_t v1 = static_cast<acc_t>(plane[b.y_low * sy + b.x_low * sx]);
      const acc_t v2 = static_cast<acc_t>(plane[b.y_low * sy + b.x_high * sx]);
      const acc_t v3 = static_cast<acc_t>(plane[b.y_high * sy + b.x_low * sx]);
      const acc_t v4 = static_cast<acc_t>(plane[b.y_high * sy + b.x_high * sx]);
      sum += b.w1 * v1 + b.w2 * v2 + b.w3 * v3 + b.w4 * v4;
    }
  }
  return sum / g.count;
}

// The backward of one output bin: calls add(offset, value) for each of the four corners of
// every valid sample, value = grad * w / count (torchvision's order of operations). The caller
// supplies `add` (a plain += on the CPU, an atomic add on CUDA).
template <typename acc_t, typename AddFn>
MF_HOST_DEVICE void roi_align_bin_backward(acc_t grad, int height, int width, int64_t sy,
                                           int64_t sx, const RoiGeometry<acc_t>& g, int ph,
                                           int pw, AddFn add) {
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const acc_t y = sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const acc_t x = sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w);
      const Bilinear<acc_t> b = bilinear(y, x, height, width);
      if (!b.valid) continue;
      add(b.y_low * sy + b.x_low * sx, grad * b.w1 / g.count);
      add(b.y_low * sy + b.x_high * sx, grad * b.w2 / g.count);
      add(b.y_high * sy + b.x_low * sx, grad * b.w3 / g.count);
      add(b.y_high * sy + b.x_high * sx, grad * b.w4 / g.count);
    }
  }
}

// bilinear() split into its two axes, so that a kernel can compute the PH * grid_h row taps
// and PW * grid_w column taps of a ROI once and combine them per sample instead of redoing
// the bilinear arithmetic for every sample of every channel.
//
// Exact, not an approximation: bilinear() treats y and x independently (validity, clamping,
// low/high index, ly/hy and lx/hx), and bilinear(pos, 0, size, 1) returns w1 = h * 1 and
// w3 = l * 1, i.e. exactly h and l of that axis. The products of bilinear_from_axes are the
// products bilinear() forms (w1 = hy * hx, ...), so results are bitwise identical; the CPU
// tests against torchvision check it.
template <typename T>
struct AxisTap {
  int low, high;   // the two neighbouring pixel indices along this axis
  T w_low, w_high; // their weights (h and l)
  bool valid;      // within [-1, size] and size > 0
};

template <typename T>
MF_HOST_DEVICE AxisTap<T> axis_tap(T pos, int size) {
  const Bilinear<T> b = bilinear(pos, T(0), size, 1);
  AxisTap<T> a;
  a.low = b.y_low;
  a.high = b.y_high;
  a.w_low = b.w1;
  a.w_high = b.w3;
  a.valid = b.valid;
  return a;
}

// The same Bilinear as bilinear(y, x, height, width), from axis_tap(y, height) and
// axis_tap(x, width).
template <typename T>
MF_HOST_DEVICE Bilinear<T> bilinear_from_axes(const AxisTap<T>& ay, const AxisTap<T>& ax) {
  Bilinear<T> b;
  b.valid = ay.valid && ax.valid;
  if (!b.valid) {
    b.y_low = b.y_high = b.x_low = b.x_high = 0;
    b.w1 = b.w2 = b.w3 = b.w4 = T(0);
    return b;
  }
  b.y_low = ay.low;
  b.y_high = ay.high;
  b.x_low = ax.low;
  b.x_high = ax.high;
  b.w1 = ay.w_low * ax.w_low;
  b.w2 = ay.w_low * ax.w_high;
  b.w3 = ay.w_high * ax.w_low;
  b.w4 = ay.w_high * ax.w_high;
  return b;
}

}  // namespace maskrcnn_fast
