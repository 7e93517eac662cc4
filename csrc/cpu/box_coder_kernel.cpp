// decode_boxes (with the optional clip to the image) and encode_boxes on the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/box_checks.h"
#include "common/box_math.h"

namespace maskrcnn_fast {
namespace {

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
    // ~20 ns per decoded box (two exp); about 8k boxes per chunk.
    const int64_t grain = std::max<int64_t>(1, 8192 / C);
    at::parallel_for(0, K, grain, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const scalar_t* b = box_ptr + k * 4;
        const BoxFrame<acc_t> f = box_frame<acc_t>(b[0], b[1], b[2], b[3]);
        const scalar_t* c = code_ptr + k * 4 * C;
        scalar_t* o = out_ptr + k * 4 * C;
        for (int64_t j = 0; j < C; ++j, c += 4, o += 4) {
          acc_t r[4];
          decode_box<acc_t>(f, c[0], c[1], c[2], c[3], p, r);
          o[0] = static_cast<scalar_t>(r[0]);
          o[1] = static_cast<scalar_t>(r[1]);
          o[2] = static_cast<scalar_t>(r[2]);
          o[3] = static_cast<scalar_t>(r[3]);
        }
      }
    });
  });
  return out;
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
    const acc_t wx = static_cast<acc_t>(w[0]), wy = static_cast<acc_t>(w[1]);
    const acc_t ww = static_cast<acc_t>(w[2]), wh = static_cast<acc_t>(w[3]);
    const scalar_t* r_ptr = ref.const_data_ptr<scalar_t>();
    const scalar_t* p_ptr = prop.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, K, 8192, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const scalar_t* r = r_ptr + k * 4;
        const scalar_t* q = p_ptr + k * 4;
        acc_t t[4];
        encode_box<acc_t>(box_frame<acc_t>(r[0], r[1], r[2], r[3]),
                          box_frame<acc_t>(q[0], q[1], q[2], q[3]), wx, wy, ww, wh, t);
        scalar_t* o = out_ptr + k * 4;
        o[0] = static_cast<scalar_t>(t[0]);
        o[1] = static_cast<scalar_t>(t[1]);
        o[2] = static_cast<scalar_t>(t[2]);
        o[3] = static_cast<scalar_t>(t[3]);
      }
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
