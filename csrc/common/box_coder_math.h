#pragma once
// The box coder (decode_boxes, encode_boxes): the per-element arithmetic, shared by CPU and
// CUDA (and by rpn_proposals and detection_postprocess, which decode boxes).
//
// Semantics are torchvision's BoxCoder.decode_single / encode_single and clip_boxes_to_image.
// The order of float operations follows torchvision's tensor expressions one rounding at a
// time, so float32 and float64 results agree with it bitwise except where exp/log round
// differently: torch's vectorised exp/log are within 1-2 ulp of ours, which are (nearly always)
// correctly rounded. Half and bfloat16 compute in float (opmath) and round once at the end.
// Float exp/log are our own (exp_log.h), so CPU and CUDA agree bitwise for float, half and
// bfloat16; double uses each platform's libm exp/log.
#include "common/exp_log.h"
#include "common/macros.h"

namespace maskrcnn_fast {

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
