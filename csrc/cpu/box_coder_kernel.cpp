// decode_boxes (with the optional clip to the image) and encode_boxes on the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>

// The loops below must stay branch-free to vectorise: GCC only if-converts the NaN-propagating
// selects (clamps) of box_coder_math.h when floating-point traps may be assumed off. Arithmetic and
// results are unchanged (no FMA contraction, no reassociation); only exception flags differ.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#include "common/box_coder_math.h"
#include "common/box_coder_checks.h"

namespace maskrcnn_fast {
namespace {

template <typename T, typename acc_t, bool kClip>
C10_ALWAYS_INLINE void decode_store(const BoxFrame<acc_t>& f, const T* c,
                                    const DecodeParams<acc_t>& p, T* o) {
  acc_t r[4];
  decode_box<acc_t>(f, c[0], c[1], c[2], c[3], p, kClip, r);
  o[0] = static_cast<T>(r[0]);
  o[1] = static_cast<T>(r[1]);
  o[2] = static_cast<T>(r[2]);
  o[3] = static_cast<T>(r[3]);
}

// Rows [begin, end) of rel_codes [K, 4 * C]. One class (RPN): the loop over boxes vectorises;
// several classes (box head): the loop over the classes of one box does. Always inlined, so
// that each target clone below compiles (and vectorises) its own copy.
template <typename T, typename acc_t, bool kClip>
C10_ALWAYS_INLINE void decode_rows(const T* __restrict__ codes, const T* __restrict__ boxes,
                                   T* __restrict__ out, int64_t C, int64_t begin, int64_t end,
                                   const DecodeParams<acc_t>& p) {
  if (C == 1) {
    for (int64_t k = begin; k < end; ++k) {
      const T* b = boxes + k * 4;
      decode_store<T, acc_t, kClip>(box_frame<acc_t>(b[0], b[1], b[2], b[3]), codes + k * 4, p,
                                    out + k * 4);
    }
    return;
  }
  for (int64_t k = begin; k < end; ++k) {
    const T* b = boxes + k * 4;
    const BoxFrame<acc_t> f = box_frame<acc_t>(b[0], b[1], b[2], b[3]);
    const T* c = codes + k * 4 * C;
    T* o = out + k * 4 * C;
    for (int64_t j = 0; j < C; ++j) decode_store<T, acc_t, kClip>(f, c + j * 4, p, o + j * 4);
  }
}

template <typename T, typename acc_t>
C10_ALWAYS_INLINE void decode_rows_any(const T* codes, const T* boxes, T* out, int64_t C,
                                       int64_t begin, int64_t end, const DecodeParams<acc_t>& p) {
  if (p.clip) {
    decode_rows<T, acc_t, true>(codes, boxes, out, C, begin, end, p);
  } else {
    decode_rows<T, acc_t, false>(codes, boxes, out, C, begin, end, p);
  }
}

// float, the dtype that matters for speed, gets AVX2 / AVX-512 clones picked at load time
// (the extension is compiled for baseline x86-64). Every clone rounds identically.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void decode_rows_f32(const float* codes, const float* boxes, float* out, int64_t C,
                     int64_t begin, int64_t end, const DecodeParams<float>& p) {
  decode_rows_any<float, float>(codes, boxes, out, C, begin, end, p);
}

template <typename T, typename acc_t>
void decode_dispatch(const T* codes, const T* boxes, T* out, int64_t C, int64_t begin,
                     int64_t end, const DecodeParams<acc_t>& p) {
  if constexpr (std::is_same_v<T, float>) {
    decode_rows_f32(codes, boxes, out, C, begin, end, p);
  } else {
    decode_rows_any<T, acc_t>(codes, boxes, out, C, begin, end, p);
  }
}

at::Tensor decode_boxes_cpu(const at::Tensor& rel_codes, const at::Tensor& boxes,
                            at::ArrayRef<double> weights, double bbox_xform_clip,
                            at::OptionalIntArrayRef image_size) {
  check_decode_boxes(rel_codes, boxes, weights, image_size);
  const at::Tensor codes = rel_codes.contiguous();
  // torchvision casts the reference boxes to the codes' dtype before any arithmetic.
  const at::Tensor ref = boxes.to(codes.scalar_type()).contiguous();
  at::Tensor out = at::empty(codes.sizes(), codes.options());
  const int64_t K = codes.size(0);
  const int64_t C = codes.size(1) / 4;
  if (K == 0 || C == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codes.scalar_type(), "decode_boxes",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const DecodeParams<acc_t> p =
        make_decode_params<scalar_t, acc_t>(weights, bbox_xform_clip, image_size);
    const scalar_t* code_ptr = codes.const_data_ptr<scalar_t>();
    const scalar_t* box_ptr = ref.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    // A few ns per decoded box: chunks of ~32k boxes amortise the thread hand-off.
    const int64_t grain = std::max<int64_t>(1, 32768 / C);
    at::parallel_for(0, K, grain, [&](int64_t begin, int64_t end) {
      decode_dispatch<scalar_t, acc_t>(code_ptr, box_ptr, out_ptr, C, begin, end, p);
    });
  });
  return out;
}

template <typename T, typename acc_t>
C10_ALWAYS_INLINE void encode_rows(const T* __restrict__ ref, const T* __restrict__ prop,
                                   T* __restrict__ out, int64_t begin, int64_t end,
                                   const acc_t* w) {
  const acc_t wx = w[0], wy = w[1], ww = w[2], wh = w[3];
  for (int64_t k = begin; k < end; ++k) {
    const T* r = ref + k * 4;
    const T* q = prop + k * 4;
    acc_t t[4];
    encode_box<acc_t>(box_frame<acc_t>(r[0], r[1], r[2], r[3]),
                      box_frame<acc_t>(q[0], q[1], q[2], q[3]), wx, wy, ww, wh, t);
    T* o = out + k * 4;
    o[0] = static_cast<T>(t[0]);
    o[1] = static_cast<T>(t[1]);
    o[2] = static_cast<T>(t[2]);
    o[3] = static_cast<T>(t[3]);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void encode_rows_f32(const float* ref, const float* prop, float* out, int64_t begin,
                     int64_t end, const float* w) {
  encode_rows<float, float>(ref, prop, out, begin, end, w);
}

template <typename T, typename acc_t>
void encode_dispatch(const T* ref, const T* prop, T* out, int64_t begin, int64_t end,
                     const acc_t* w) {
  if constexpr (std::is_same_v<T, float>) {
    encode_rows_f32(ref, prop, out, begin, end, w);
  } else {
    encode_rows<T, acc_t>(ref, prop, out, begin, end, w);
  }
}

at::Tensor encode_boxes_cpu(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                            at::ArrayRef<double> weights) {
  check_encode_boxes(reference_boxes, proposals, weights);
  const auto dtype = at::promote_types(reference_boxes.scalar_type(), proposals.scalar_type());
  const std::vector<double> w = round_weights_to(weights, reference_boxes.scalar_type());
  const at::Tensor ref = reference_boxes.to(dtype).contiguous();
  const at::Tensor prop = proposals.to(dtype).contiguous();
  at::Tensor out = at::empty({ref.size(0), 4}, ref.options());
  const int64_t K = ref.size(0);
  if (K == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "encode_boxes", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t wa[4] = {static_cast<acc_t>(w[0]), static_cast<acc_t>(w[1]),
                         static_cast<acc_t>(w[2]), static_cast<acc_t>(w[3])};
    const scalar_t* r_ptr = ref.const_data_ptr<scalar_t>();
    const scalar_t* p_ptr = prop.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, K, 32768, [&](int64_t begin, int64_t end) {
      encode_dispatch<scalar_t, acc_t>(r_ptr, p_ptr, out_ptr, begin, end, wa);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("decode_boxes", &decode_boxes_cpu);
  m.impl("encode_boxes", &encode_boxes_cpu);
}

}  // namespace maskrcnn_fast

#pragma GCC pop_options
