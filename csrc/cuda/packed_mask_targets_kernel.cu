// Mask targets from packed instance masks on CUDA: torchvision's project_masks_on_boxes after
// torchvision's nearest resize of the masks, for the boxes of all images in one launch, read
// straight from the crops (common/packed_mask_targets_math.h).
//
// One block per box, as in mask_targets: it puts the box's row taps (size * grid_h) and column
// taps (size * grid_w), already mapped to crop rows and columns, in shared memory when they fit
// (else, in a second kernel, each sample computes its own), then each thread makes output bins
// from them.
//
// Instance rows and indices are guarded inside the kernel (checking them on the host would need
// a sync): a box whose instance_index is out of range, or whose instances row is not a readable
// crop (packed_instance_ok), gets zeros.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch.cuh"

#include "common/packed_mask_targets_checks.h"
#include "common/packed_mask_targets_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;
// Row plus column taps kept in shared memory (20 KB in float, 32 KB in double): at size 28,
// boxes up to about 500 pixels on a side.
constexpr int kMaxAxisTaps = 1024;

// Launched twice over all boxes: kTable = true makes the boxes whose taps fit in shared memory
// (every real one) and those with an invalid row or box (zeros), kTable = false the others, each
// sample computing its own taps. Two kernels rather than one with both paths: together they
// hold too many per-box values for the registers (ptxas spilled).
template <typename scalar_t, typename acc_t, bool kTable>
__global__ void __launch_bounds__(kThreads)
    packed_mask_targets_kernel(const uint8_t* __restrict__ data, int64_t data_size,
                               const int64_t* __restrict__ instances, int64_t num_instances,
                               const scalar_t* __restrict__ boxes,
                               const int64_t* __restrict__ instance_index,
                               scalar_t* __restrict__ out, int64_t num_boxes, int size) {
  __shared__ AxisTap<acc_t> taps[kTable ? kMaxAxisTaps : 1];
  const int bins = size * size;
  for (int64_t k = blockIdx.x; k < num_boxes; k += gridDim.x) {
    // Every thread of the block reads the same k, so every branch below is uniform over the
    // block and no thread misses a barrier.
    const int64_t n = instance_index[k];
    const int64_t* r = instances + (n >= 0 && n < num_instances ? n : 0) * kInstanceColumns;
    const bool row_ok = n >= 0 && n < num_instances && packed_instance_ok(r, data_size);
    const scalar_t* b = boxes + 4 * k;
    const RoiGeometry<acc_t> g = mask_target_geometry<acc_t>(
        static_cast<acc_t>(b[0]), static_cast<acc_t>(b[1]), static_cast<acc_t>(b[2]),
        static_cast<acc_t>(b[3]), size);
    PackedAxis ay{}, ax{};
    if (row_ok) {
      ay = packed_axis(r, /*rows=*/true);
      ax = packed_axis(r, /*rows=*/false);
    }
    const bool active = row_ok && ay.extent > 0 && ax.extent > 0 && g.grid_h > 0 &&
                        g.grid_w > 0;
    const int ny = active ? size * g.grid_h : 0;  // each at most 2^13 * 1024: fits int
    const int nx = active ? size * g.grid_w : 0;
    const bool fits = static_cast<int64_t>(ny) + nx <= kMaxAxisTaps;  // (inactive boxes too)
    if (fits != kTable) continue;  // the other kernel's box
    scalar_t* o = out + k * bins;
    if (!active) {
      for (int e = threadIdx.x; e < bins; e += blockDim.x) o[e] = scalar_t(0);
      continue;
    }
    const uint8_t* crop = data + r[kOffset];
    const int64_t width = r[kWidth];
    if constexpr (kTable) {
      __syncthreads();  // the previous box's readers are done with the taps
      for (int i = threadIdx.x; i < ny + nx; i += blockDim.x) {
        if (i < ny) {
          taps[i] = packed_mask_target_tap(g.start_h, g.bin_h, i / g.grid_h, i % g.grid_h,
                                           g.grid_h, ay);
        } else {
          const int j = i - ny;
          taps[i] = packed_mask_target_tap(g.start_w, g.bin_w, j / g.grid_w, j % g.grid_w,
                                           g.grid_w, ax);
        }
      }
      __syncthreads();
      for (int e = threadIdx.x; e < bins; e += blockDim.x) {
        const int ph = e / size, pw = e - (e / size) * size;
        const AxisTap<acc_t>* rt = taps + ph * g.grid_h;
        const AxisTap<acc_t>* c = taps + ny + pw * g.grid_w;
        o[e] = static_cast<scalar_t>(packed_mask_target_bin<acc_t>(
            crop, width, g, [rt](int iy) { return rt[iy]; }, [c](int ix) { return c[ix]; }));
      }
    } else {
      for (int e = threadIdx.x; e < bins; e += blockDim.x) {
        const int ph = e / size, pw = e - (e / size) * size;
        o[e] = static_cast<scalar_t>(packed_mask_target_bin<acc_t>(
            crop, width, g,
            [&](int iy) {
              return packed_mask_target_tap(g.start_h, g.bin_h, ph, iy, g.grid_h, ay);
            },
            [&](int ix) {
              return packed_mask_target_tap(g.start_w, g.bin_w, pw, ix, g.grid_w, ax);
            }));
      }
    }
  }
}

at::Tensor packed_mask_targets_cuda(const at::Tensor& data, const at::Tensor& instances,
                                    const at::Tensor& boxes, const at::Tensor& instance_index,
                                    int64_t size) {
  check_packed_mask_targets_inputs(data, instances, boxes, instance_index, size);
  DeviceGuard guard(boxes.device());
  const int64_t k = boxes.size(0);
  at::Tensor out = at::empty({k, size, size}, boxes.options());
  if (k == 0) return out;
  const at::Tensor d = data.contiguous();
  const at::Tensor rows = instances.contiguous();
  const at::Tensor b = boxes.contiguous();
  const at::Tensor index = instance_index.contiguous();
  // An empty data buffer is never read (a row with a non-empty crop is then not ok).
  const uint8_t* bytes = d.numel() > 0 ? static_cast<const uint8_t*>(d.const_data_ptr()) : nullptr;
  // An empty instances tensor is never read either (every index is out of range).
  const int64_t* rp = rows.numel() > 0 ? rows.const_data_ptr<int64_t>() : nullptr;
  const auto stream = current_stream();
  const unsigned int blocks =
      static_cast<unsigned int>(std::min<int64_t>(k, int64_t(1) << 20));  // grid-stride rest
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(),
                                  "packed_mask_targets", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Each box is made by one of the two (no order between them: they write different boxes).
    launch(packed_mask_targets_kernel<scalar_t, acc_t, true>, blocks, kThreads, stream, bytes,
           d.numel(), rp, rows.size(0), b.const_data_ptr<scalar_t>(),
           index.const_data_ptr<int64_t>(), out.mutable_data_ptr<scalar_t>(), k,
           static_cast<int>(size));
    launch(packed_mask_targets_kernel<scalar_t, acc_t, false>, blocks, kThreads, stream, bytes,
           d.numel(), rp, rows.size(0), b.const_data_ptr<scalar_t>(),
           index.const_data_ptr<int64_t>(), out.mutable_data_ptr<scalar_t>(), k,
           static_cast<int>(size));
  });
  return out;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("packed_mask_targets", &packed_mask_targets_cuda);
}

}  // namespace maskrcnn_fast
