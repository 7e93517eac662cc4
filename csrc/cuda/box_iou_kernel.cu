// box_iou on CUDA: one thread per output element (grid-stride), the arithmetic of
// common/box_iou_math.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch.cuh"

#include "common/box_iou_checks.h"
#include "common/box_iou_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;

template <typename T, typename acc_t>
__global__ void box_iou_kernel(const T* __restrict__ b1, const T* __restrict__ b2,
                               acc_t* __restrict__ out, int64_t M, int64_t N) {
  const int64_t total = M * N;
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += step) {
    const int64_t i = k / N;
    const int64_t j = k - i * N;
    out[k] = pair_iou<T, acc_t>(iou_box<T, acc_t>(b1 + i * 4), iou_box<T, acc_t>(b2 + j * 4));
  }
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_box_iou(boxes1, boxes2);
  DeviceGuard guard(boxes1.device());
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  const int64_t M = b1.size(0), N = b2.size(0);
  at::Tensor out = at::empty({M, N}, b1.options().dtype(at::toOpMathType(b1.scalar_type())));
  if (M == 0 || N == 0) return out;
  const int64_t blocks = std::min<int64_t>((M * N + kThreads - 1) / kThreads, 65536);
  auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch(box_iou_kernel<scalar_t, acc_t>, blocks, kThreads, stream, b1.const_data_ptr<scalar_t>(),
           b2.const_data_ptr<scalar_t>(), out.mutable_data_ptr<acc_t>(), M, N);
  });
  return out;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) { m.impl("box_iou", &box_iou_cuda); }

}  // namespace maskrcnn_fast
