#pragma once
// Anchor grids and the box coder: the per-element arithmetic, shared by CPU and CUDA.
//
// Semantics are torchvision's AnchorGenerator.grid_anchors, BoxCoder.decode_single /
// encode_single and clip_boxes_to_image. The order of float operations follows torchvision's
// tensor expressions one rounding at a time, so float32 and float64 results agree with it
// bitwise except where exp/log round differently: torch's vectorised exp/log are within 1-2 ulp
// of ours, which are (nearly always) correctly rounded. Half and bfloat16 compute in float
// (opmath) and round once at the end. Float exp/log are our own (below), so CPU and CUDA agree
// bitwise for float, half and bfloat16; double uses each platform's libm exp/log.
#include <cstring>

#include "common/macros.h"

// Host compilers must inline the per-box math into the CPU loops, or those cannot vectorise.
#if defined(__CUDACC__) || defined(__HIPCC__) || !defined(__GNUC__)
#define MF_BOX_INLINE MF_HOST_DEVICE
#else
#define MF_BOX_INLINE inline __attribute__((always_inline))
#endif

namespace maskrcnn_fast {

// Upper bound on FPN levels in one grid_anchors call: the CUDA kernel receives the per-level
// layout by value (no host-to-device copy, so it can be captured in a CUDA graph).
constexpr int kMaxAnchorLevels = 16;

template <typename To, typename From>
MF_BOX_INLINE To mf_bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "mf_bit_cast: sizes differ");
  To r;
  memcpy(&r, &v, sizeof(r));
  return r;
}

// exp of a float, computed in double and rounded once: agrees with the correctly rounded
// result except in about 1 case in 10^7 (then by 1 ulp), like libm's expf, but it is branch-free
// straight-line arithmetic, so the CPU loops vectorise, and CPU and CUDA give identical bits.
// x = n ln2 + r with |r| <= ln2 / 2; exp(r) by its Taylor series to r^10 (relative error
// < 3e-13); 2^n built in the exponent field. The clamp to [-200, 200] keeps n in range and
// still gives 0 and +Inf after rounding to float; NaN propagates through r.
MF_BOX_INLINE float mf_exp(float xf) {
  double x = static_cast<double>(xf);
  x = x > 200.0 ? 200.0 : x;
  x = x < -200.0 ? -200.0 : x;
  const double kRound = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const double t = x * 1.4426950408889634 + kRound;
  const double n = t - kRound;
  const int64_t ni = mf_bit_cast<int64_t>(t) - mf_bit_cast<int64_t>(kRound);
  const double r = x - n * 0.6931471805599453;
  double p = 1.0 / 3628800;
  p = p * r + 1.0 / 362880;
  p = p * r + 1.0 / 40320;
  p = p * r + 1.0 / 5040;
  p = p * r + 1.0 / 720;
  p = p * r + 1.0 / 120;
  p = p * r + 1.0 / 24;
  p = p * r + 1.0 / 6;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const double two_n = mf_bit_cast<double>(static_cast<uint64_t>(ni + 1023) << 52);
  return static_cast<float>(p * two_n);
}
MF_HOST_DEVICE double mf_exp(double v) { return exp(v); }

// log of a float, computed in double and rounded once, branch-free for the same reasons as
// mf_exp. x = 2^e m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1),
// |s| < 0.172, by its series to s^15 (relative error < 1e-14). Near x = 1, e = 0: no
// cancellation. 0 -> -Inf, negative -> NaN, +Inf -> +Inf, NaN -> NaN.
MF_BOX_INLINE float mf_log(float xf) {
  const uint32_t raw = mf_bit_cast<uint32_t>(xf);
  // Subnormals: scale by 2^23 (exact) so that the exponent field is meaningful.
  const bool sub = raw < 0x00800000u;
  const uint32_t bits = mf_bit_cast<uint32_t>(sub ? xf * 8388608.0f : xf);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xffu) - (sub ? 150 : 127);
  double m = static_cast<double>(mf_bit_cast<float>((bits & 0x007fffffu) | 0x3f800000u));
  const bool high = m > 1.4142135623730951;
  m = high ? m * 0.5 : m;
  e = high ? e + 1 : e;
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double q = 1.0 / 15;
  q = q * s2 + 1.0 / 13;
  q = q * s2 + 1.0 / 11;
  q = q * s2 + 1.0 / 9;
  q = q * s2 + 1.0 / 7;
  q = q * s2 + 1.0 / 5;
  q = q * s2 + 1.0 / 3;
  q = q * s2 + 1.0;
  double r = (2.0 * s) * q + static_cast<double>(e) * 0.6931471805599453;
  const double inf = mf_bit_cast<double>(static_cast<uint64_t>(0x7ff0000000000000ull));
  r = xf == 0.0f ? -inf : r;
  r = xf < 0.0f ? inf - inf : r;
  r = xf == static_cast<float>(inf) ? inf : r;
  r = xf != xf ? static_cast<double>(xf) : r;
  return static_cast<float>(r);
}
MF_HOST_DEVICE double mf_log(double v) { return log(v); }

// ---- anchors -------------------------------------------------------------------------

// Where one level's anchors sit in the flat output and how they are laid out.
struct AnchorLevel {
  int64_t begin;         // first anchor of this level in the output
  int64_t grid_w;        // feature-map width (locations per row)
  int64_t num_cell;      // anchors per location A
  int64_t cell_begin;    // first row of this level's cell anchors
  int64_t stride_h, stride_w;
};

struct AnchorLayout {
  AnchorLevel level[kMaxAnchorLevels];
  int num_levels;
  int64_t total;  // anchors of all levels
};

// One coordinate of a grid anchor: the integer shift is first rounded to the output type, the
// sum is rounded once (torchvision adds an int32 shift grid to the cell anchors of type T).
template <typename T, typename acc_t>
MF_HOST_DEVICE T anchor_shift(int64_t shift) {
  return static_cast<T>(static_cast<acc_t>(shift));
}
template <typename T, typename acc_t>
MF_HOST_DEVICE T anchor_add(T shift, T cell) {
  return static_cast<T>(static_cast<acc_t>(shift) + static_cast<acc_t>(cell));
}
template <typename T, typename acc_t>
MF_HOST_DEVICE T anchor_coord(int64_t shift, T cell) {
  return anchor_add<T, acc_t>(anchor_shift<T, acc_t>(shift), cell);
}

// Writes anchor (x, y, a) of a level: the cell anchor a moved to (x * stride_w, y * stride_h).
template <typename T, typename acc_t>
MF_HOST_DEVICE void write_anchor(const T* cell, int64_t shift_x, int64_t shift_y, T* out) {
  out[0] = anchor_coord<T, acc_t>(shift_x, cell[0]);
  out[1] = anchor_coord<T, acc_t>(shift_y, cell[1]);
  out[2] = anchor_coord<T, acc_t>(shift_x, cell[2]);
  out[3] = anchor_coord<T, acc_t>(shift_y, cell[3]);
}

// The level of flat anchor index i (levels are few: a linear scan beats a search).
MF_HOST_DEVICE int anchor_level_of(const AnchorLayout& layout, int64_t i) {
  int l = 0;
  while (l + 1 < layout.num_levels && i >= layout.level[l + 1].begin) ++l;
  return l;
}

// Anchor i of the flat output (levels, then locations y-major, then cell anchors).
template <typename T, typename acc_t>
MF_HOST_DEVICE void grid_anchor_at(const AnchorLayout& layout, const T* cell_anchors, int64_t i,
                                   T* out) {
  const AnchorLevel& lv = layout.level[anchor_level_of(layout, i)];
  const int64_t local = i - lv.begin;
  const int64_t loc = local / lv.num_cell;
  const int64_t a = local - loc * lv.num_cell;
  const int64_t y = loc / lv.grid_w;
  const int64_t x = loc - y * lv.grid_w;
  write_anchor<T, acc_t>(cell_anchors + (lv.cell_begin + a) * 4, x * lv.stride_w,
                         y * lv.stride_h, out);
}

// ---- box coder -----------------------------------------------------------------------

template <typename acc_t>
struct DecodeParams {
  acc_t wx, wy, ww, wh;  // weights of (dx, dy, dw, dh)
  acc_t xform_clip;      // dw, dh clamped from above (exp overflow guard)
  bool clip;             // clip to the image afterwards
  acc_t lo;              // 0: a field, not a literal, so that x86 compilers emit maxss, not a
                         // branch (they keep the branch for a literal 0 because of -0.0)
  acc_t img_w, img_h;
};

// Centre and size of a reference box, shared by all its class columns.
template <typename acc_t>
struct BoxFrame {
  acc_t w, h, cx, cy;
};

template <typename acc_t>
MF_BOX_INLINE BoxFrame<acc_t> box_frame(acc_t x1, acc_t y1, acc_t x2, acc_t y2) {
  BoxFrame<acc_t> f;
  f.w = x2 - x1;
  f.h = y2 - y1;
  f.cx = x1 + acc_t(0.5) * f.w;
  f.cy = y1 + acc_t(0.5) * f.h;
  return f;
}

// NaN stays NaN (torch.clamp propagates it): both comparisons are false for NaN.
template <typename acc_t>
MF_BOX_INLINE acc_t clamp_nan(acc_t v, acc_t lo, acc_t hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Decodes one (dx, dy, dw, dh) against frame f into x1, y1, x2, y2, clipped if `clip` (p.clip
// passed separately: CPU loops make it a compile-time constant, a branch blocks vectorising).
template <typename acc_t>
MF_BOX_INLINE void decode_box(const BoxFrame<acc_t>& f, acc_t c0, acc_t c1, acc_t c2, acc_t c3,
                              const DecodeParams<acc_t>& p, bool clip, acc_t* out) {
  const acc_t dx = c0 / p.wx;
  const acc_t dy = c1 / p.wy;
  acc_t dw = c2 / p.ww;
  acc_t dh = c3 / p.wh;
  dw = dw > p.xform_clip ? p.xform_clip : dw;
  dh = dh > p.xform_clip ? p.xform_clip : dh;
  const acc_t ctr_x = dx * f.w + f.cx;
  const acc_t ctr_y = dy * f.h + f.cy;
  const acc_t half_w = acc_t(0.5) * (mf_exp(dw) * f.w);
  const acc_t half_h = acc_t(0.5) * (mf_exp(dh) * f.h);
  acc_t x1 = ctr_x - half_w;
  acc_t y1 = ctr_y - half_h;
  acc_t x2 = ctr_x + half_w;
  acc_t y2 = ctr_y + half_h;
  if (clip) {
    x1 = clamp_nan(x1, p.lo, p.img_w);
    y1 = clamp_nan(y1, p.lo, p.img_h);
    x2 = clamp_nan(x2, p.lo, p.img_w);
    y2 = clamp_nan(y2, p.lo, p.img_h);
  }
  out[0] = x1;
  out[1] = y1;
  out[2] = x2;
  out[3] = y2;
}

// The regression target (dx, dy, dw, dh) that moves proposal p onto reference box r.
template <typename acc_t>
MF_BOX_INLINE void encode_box(const BoxFrame<acc_t>& r, const BoxFrame<acc_t>& p, acc_t wx,
                              acc_t wy, acc_t ww, acc_t wh, acc_t* out) {
  out[0] = wx * (r.cx - p.cx) / p.w;
  out[1] = wy * (r.cy - p.cy) / p.h;
  out[2] = ww * mf_log(r.w / p.w);
  out[3] = wh * mf_log(r.h / p.h);
}

}  // namespace maskrcnn_fast
