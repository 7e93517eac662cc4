#pragma once
// FPN level assignment and the per-ROI sampling plan of multilevel_roi_align, shared by the CPU
// and CUDA kernels. The bilinear arithmetic itself is roi_align_math.h's.
//
// Level (Lin et al., FPN, eq. 1, as torchvision's LevelMapper computes it):
//   level = clamp(floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps), k_min, k_max)
// in float32 for float32, float16 and bfloat16 boxes (torchvision's box_area upcasts reduced
// types) and in float64 for float64 boxes, one rounding per tensor op in torchvision's order, so
// that the same ROI goes to the same level as in torchvision.
// One difference between torch's CPU and CUDA kernels is kept: `s / canonical_scale` divides on
// the CPU but multiplies by the reciprocal on CUDA (torch's div by a CPU scalar), so each of our
// kernels matches torchvision on its own device; see fpn_level's `reciprocal_div`.
#include "common/macros.h"
#include "common/roi_align_math.h"

namespace maskrcnn_fast {

// Up to this many pyramid levels travel by value in the kernel argument.
constexpr int kMaxLevels = 8;

MF_HOST_DEVICE float mf_log2(float v) { return log2f(v); }
MF_HOST_DEVICE double mf_log2(double v) { return log2(v); }
MF_HOST_DEVICE float mf_sqrt(float v) { return sqrtf(v); }
MF_HOST_DEVICE double mf_sqrt(double v) { return sqrt(v); }

// The FPN level of box (x1, y1, x2, y2) relative to k_min: 0 .. k_max - k_min, or -1 when the
// level is NaN. T is float (float32, float16, bfloat16 boxes) or double. A box of negative area
// (x2 < x1 xor y2 < y1) has sqrt(area) = NaN; torchvision's level is then NaN, matches no level
// and pools to zeros, and so does ours (-1). The result may also be negative (k_min > k_max) or
// beyond the last level (scales not consecutive powers of two): the caller writes zeros then, as
// torchvision, which pools no feature for such levels.
template <typename T>
MF_HOST_DEVICE int fpn_level(T x1, T y1, T x2, T y2, int k_min, int k_max, int canonical_scale,
                             int canonical_level, T eps, bool reciprocal_div) {
  const T s = mf_sqrt((x2 - x1) * (y2 - y1));
  // The ints are Python scalars in torchvision: torch computes with them in T.
  const T s0 = static_cast<T>(canonical_scale);
  const T ratio = reciprocal_div ? s * (T(1) / s0) : s / s0;
  T lvl = mf_floor(static_cast<T>(canonical_level) + mf_log2(ratio) + eps);
  if (!(lvl == lvl)) return -1;  // NaN
  // torch.clamp(min, max): max first, then min, so min > max gives max.
  if (lvl < static_cast<T>(k_min)) lvl = static_cast<T>(k_min);
  if (lvl > static_cast<T>(k_max)) lvl = static_cast<T>(k_max);
  return static_cast<int>(lvl) - k_min;
}

// The pyramid level k of a feature map of the given scale (2^-k), as torchvision infers k_min
// and k_max: -log2 in float32, truncated to an integer.
MF_HOST_DEVICE int level_of_scale(double scale) {
  return static_cast<int>(-log2f(static_cast<float>(scale)));
}

// One valid bilinear sample of a bin, with its four corner offsets already multiplied by the
// strides: computed once per ROI and reused for every channel.
template <typename acc_t>
struct Sample {
  int64_t o1, o2, o3, o4;
  acc_t w1, w2, w3, w4;
};

// The rectangle of pixels a set of samples reads (inclusive); empty while y0 > y1.
struct Footprint {
  int y0, y1, x0, x1;
  MF_HOST_DEVICE Footprint() : y0(1 << 30), y1(-1), x0(1 << 30), x1(-1) {}
};

// Writes the valid samples of bin (ph, pw) to `out` in roi_align_bin's order and returns how
// many there are (at most g.grid_h * g.grid_w); grows `fp` to cover the pixels they read.
template <typename acc_t>
MF_HOST_DEVICE int plan_bin(const RoiGeometry<acc_t>& g, int ph, int pw, int height, int width,
                            int64_t sy, int64_t sx, Sample<acc_t>* out, Footprint& fp) {
  int n = 0;
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const acc_t y = sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const acc_t x = sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w);
      const Bilinear<acc_t> b = bilinear(y, x, height, width);
      if (!b.valid) continue;
      Sample<acc_t>& s = out[n++];
      s.o1 = b.y_low * sy + b.x_low * sx;
      s.o2 = b.y_low * sy + b.x_high * sx;
      s.o3 = b.y_high * sy + b.x_low * sx;
      s.o4 = b.y_high * sy + b.x_high * sx;
      s.w1 = b.w1;
      s.w2 = b.w2;
      s.w3 = b.w3;
      s.w4 = b.w4;
      fp.y0 = mf_min(fp.y0, b.y_low);
      fp.y1 = mf_max(fp.y1, b.y_high);
      fp.x0 = mf_min(fp.x0, b.x_low);
      fp.x1 = mf_max(fp.x1, b.x_high);
    }
  }
  return n;
}

// One sample's contribution, in roi_align_bin's order of operations.
template <typename acc_t, typename scalar_t>
MF_HOST_DEVICE acc_t sample_value(const scalar_t* plane, const Sample<acc_t>& s) {
  return s.w1 * static_cast<acc_t>(plane[s.o1]) + s.w2 * static_cast<acc_t>(plane[s.o2]) +
         s.w3 * static_cast<acc_t>(plane[s.o3]) + s.w4 * static_cast<acc_t>(plane[s.o4]);
}

// The pyramid, passed by value to the kernels: level l's map is data[l] with element strides
// stride_n/c/y/x (any layout: NCHW, channels_last, or views), height[l] x width[l], sampled at
// scale[l] feature pixels per input pixel. ptr_t is const scalar_t* (forward) or acc_t* (the
// gradient buffers of the backward).
template <typename ptr_t, typename acc_t>
struct FeatureLevels {
  ptr_t data[kMaxLevels];
  int64_t stride_n[kMaxLevels], stride_c[kMaxLevels], stride_y[kMaxLevels], stride_x[kMaxLevels];
  int height[kMaxLevels], width[kMaxLevels];
  acc_t scale[kMaxLevels];
  int num_levels, k_min, k_max;
};

// The arguments that are the same for every ROI.
template <typename acc_t>
struct PoolParams {
  int64_t batch, channels;
  int pooled_h, pooled_w, sampling_ratio;
  bool aligned;
  int canonical_scale, canonical_level;
  acc_t eps;
  bool reciprocal_div;  // true on CUDA: see fpn_level
};

// What a ROI pools from: its level, image and sampling geometry; valid = false for a ROI that
// outputs zeros (bad batch index, non-finite box, or no level).
template <typename acc_t>
struct RoiPlan {
  int level;
  int64_t batch;
  RoiGeometry<acc_t> g;
  bool valid;
};

// roi: (batch index, x1, y1, x2, y2) in acc_t, the opmath type of the features, which is also
// the type torchvision computes the level in (float32 for float32/float16/bfloat16 boxes).
template <typename acc_t, typename ptr_t>
MF_HOST_DEVICE RoiPlan<acc_t> plan_roi(const acc_t* roi, const FeatureLevels<ptr_t, acc_t>& f,
                                       const PoolParams<acc_t>& p) {
  RoiPlan<acc_t> r;
  const acc_t x1 = roi[1], y1 = roi[2], x2 = roi[3], y2 = roi[4];
  r.batch = roi_batch_index(roi[0], p.batch);
  // A single level takes every ROI: torchvision calls roi_align without a level mapper then.
  r.level = f.num_levels == 1 ? 0
                              : fpn_level(x1, y1, x2, y2, f.k_min, f.k_max, p.canonical_scale,
                                          p.canonical_level, p.eps, p.reciprocal_div);
  const int l = (r.level >= 0 && r.level < f.num_levels) ? r.level : 0;
  r.g = roi_geometry(x1, y1, x2, y2, f.scale[l], p.pooled_h, p.pooled_w, p.sampling_ratio,
                     p.aligned);
  r.valid = r.batch >= 0 && r.level >= 0 && r.level < f.num_levels && r.g.valid;
  if (!r.valid) r.level = 0;  // in range for a caller that indexes before testing `valid`
  return r;
}

// The backward of one sample: roi_align_bin_backward's four adds, in its order of operations.
template <typename acc_t, typename AddFn>
MF_HOST_DEVICE void sample_backward(acc_t grad, acc_t count, const Sample<acc_t>& s, AddFn add) {
  add(s.o1, grad * s.w1 / count);
  add(s.o2, grad * s.w2 / count);
  add(s.o3, grad * s.w3 / count);
  add(s.o4, grad * s.w4 / count);
}

}  // namespace maskrcnn_fast
