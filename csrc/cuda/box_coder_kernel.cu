// decode_boxes (with the optional clip) and encode_boxes on CUDA: one thread per decoded box
// (grid-stride), the arithmetic of common/box_coder_math.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch.cuh"

#include "common/box_coder_checks.h"
#include "common/box_coder_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;

int64_t num_blocks(int64_t n) { return std::min<int64_t>((n + kThreads - 1) / kThreads, 8192); }

template <typename T, typename acc_t>
__global__ void decode_boxes_kernel(const T* __restrict__ codes, const T* __restrict__ boxes,
                                    T* __restrict__ out, int64_t K, int64_t C,
                                    const DecodeParams<acc_t> p) {
  const int64_t n = K * C;
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += step) {
    const int64_t k = i / C;
    const T* b = boxes + k * 4;
    const BoxFrame<acc_t> f = box_frame<acc_t>(b[0], b[1], b[2], b[3]);
    const T* c = codes + i * 4;
    acc_t r[4];
    decode_box<acc_t>(f, c[0], c[1], c[2], c[3], p, p.clip, r);
    T* o = out + i * 4;
    o[0] = static_cast<T>(r[0]);
    o[1] = static_cast<T>(r[1]);
    o[2] = static_cast<T>(r[2]);
    o[3] = static_cast<T>(r[3]);
  }
}

template <typename T, typename acc_t>
__global__ void encode_boxes_kernel(const T* __restrict__ ref, const T* __restrict__ prop,
                                    T* __restrict__ out, int64_t K, acc_t wx, acc_t wy, acc_t ww,
                                    acc_t wh) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < K;
       k += step) {
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

at::Tensor decode_boxes_cuda(const at::Tensor& rel_codes, const at::Tensor& boxes,
                             at::ArrayRef<double> weights, double bbox_xform_clip,
                             at::OptionalIntArrayRef image_size) {
  check_decode_boxes(rel_codes, boxes, weights, image_size);
  DeviceGuard guard(rel_codes.device());
  const at::Tensor codes = rel_codes.contiguous();
  // torchvision casts the reference boxes to the codes' dtype before any arithmetic.
  const at::Tensor ref = boxes.to(codes.scalar_type()).contiguous();
  at::Tensor out = at::empty(codes.sizes(), codes.options());
  const int64_t K = codes.size(0);
  const int64_t C = codes.size(1) / 4;
  if (K == 0 || C == 0) return out;
  auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codes.scalar_type(), "decode_boxes",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const DecodeParams<acc_t> p =
        make_decode_params<scalar_t, acc_t>(weights, bbox_xform_clip, image_size);
    launch(decode_boxes_kernel<scalar_t, acc_t>, num_blocks(K * C), kThreads, stream,
           codes.const_data_ptr<scalar_t>(), ref.const_data_ptr<scalar_t>(),
           out.mutable_data_ptr<scalar_t>(), K, C, p);
  });
  return out;
}

at::Tensor encode_boxes_cuda(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                             at::ArrayRef<double> weights) {
  check_encode_boxes(reference_boxes, proposals, weights);
  DeviceGuard guard(reference_boxes.device());
  const auto dtype = at::promote_types(reference_boxes.scalar_type(), proposals.scalar_type());
  const std::vector<double> w = round_weights_to(weights, reference_boxes.scalar_type());
  const at::Tensor ref = reference_boxes.to(dtype).contiguous();
  const at::Tensor prop = proposals.to(dtype).contiguous();
  const int64_t K = ref.size(0);
  at::Tensor out = at::empty({K, 4}, ref.options());
  if (K == 0) return out;
  auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "encode_boxes", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch(encode_boxes_kernel<scalar_t, acc_t>, num_blocks(K), kThreads, stream,
           ref.const_data_ptr<scalar_t>(), prop.const_data_ptr<scalar_t>(),
           out.mutable_data_ptr<scalar_t>(), K, static_cast<acc_t>(w[0]), static_cast<acc_t>(w[1]),
           static_cast<acc_t>(w[2]), static_cast<acc_t>(w[3]));
  });
  return out;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("decode_boxes", &decode_boxes_cuda);
  m.impl("encode_boxes", &encode_boxes_cuda);
}

}  // namespace maskrcnn_fast
