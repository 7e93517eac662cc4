#pragma once
// exp and log of a float, shared by the kernels of box_coder, rpn_proposals and
// detection_postprocess: our own, branch-free, so that CPU and CUDA give identical bits and the
// CPU loops vectorise (libm's expf/logf differ between host and device). Double uses each
// platform's libm exp/log.
#include <cstdint>
#include <cstring>

#include "common/macros.h"

// Host compilers must inline the per-box math into the CPU loops, or those cannot vectorise.
#if defined(__CUDACC__) || defined(__HIPCC__) || !defined(__GNUC__)
#define MF_BOX_INLINE MF_HOST_DEVICE
#else
#define MF_BOX_INLINE inline __attribute__((always_inline))
#endif

namespace maskrcnn_fast {

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

}  // namespace maskrcnn_fast
