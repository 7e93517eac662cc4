// grid_anchors on CUDA: one launch for all levels, one thread per anchor (grid-stride), the
// level found from the offsets passed by value (no host-to-device copy: graph-capturable).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch.cuh"

#include "common/anchors_checks.h"
#include "common/anchors_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;

template <typename T, typename acc_t>
__global__ void grid_anchors_kernel(const AnchorLayout layout, const T* __restrict__ cell,
                                    T* __restrict__ out) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < layout.total;
       i += step) {
    grid_anchor_at<T, acc_t>(layout, cell, i, out + i * 4);
  }
}

at::Tensor grid_anchors_cuda(const at::Tensor& cell_anchors, at::IntArrayRef num_cell_anchors,
                             at::IntArrayRef grid_sizes, at::IntArrayRef strides) {
  const AnchorLayout layout =
      check_grid_anchors(cell_anchors, num_cell_anchors, grid_sizes, strides);
  DeviceGuard guard(cell_anchors.device());
  at::Tensor out = at::empty({layout.total, 4}, cell_anchors.options());
  if (layout.total == 0) return out;
  const at::Tensor cell = cell_anchors.contiguous();
  const int64_t blocks = std::min<int64_t>((layout.total + kThreads - 1) / kThreads, 8192);
  auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cell.scalar_type(), "grid_anchors",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch(grid_anchors_kernel<scalar_t, acc_t>, blocks, kThreads, stream, layout,
           cell.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("grid_anchors", &grid_anchors_cuda);
}

}  // namespace maskrcnn_fast
