// Mask targets on CUDA: torchvision's project_masks_on_boxes for the proposals of all images in
// one launch, read straight from the uint8/bool ground-truth masks
// (common/mask_targets_math.h).
//
// One block per proposal: it puts the proposal's row taps (size * grid_h) and column taps
// (size * grid_w) in shared memory when they fit (else each sample computes its own), then each
// thread makes output bins from them.
//
// The per-image mask pointers, sizes and strides travel as a kernel argument (a table of up to
// kImagesPerLaunch images, by value): no host-device copy, no sync, and a CUDA graph captures it
// with the launch. Batches with more images take one launch per kImagesPerLaunch images.
// Indices are guarded inside the kernel (checking them on the host would need a sync): a box
// whose image_index or matched_index is out of range gets zeros.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cuda/launch.cuh"

#include "common/mask_targets_checks.h"
#include "common/mask_targets_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;
// Row plus column taps kept in shared memory (20 KB in float, 32 KB in double): at size 28,
// boxes up to about 500 pixels on a side.
constexpr int kMaxAxisTaps = 1024;
// 64 * 48 bytes of planes: with the other arguments, within the classic 4 KB argument limit.
constexpr int kImagesPerLaunch = 64;

struct MaskTable {
  MaskPlanes planes[kImagesPerLaunch];
  int64_t first;  // this launch serves the boxes of images [first, first + num)
  int64_t num;
  int64_t total;  // the number of images (masks.size())
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    mask_targets_kernel(const __grid_constant__ MaskTable table, const scalar_t* __restrict__ boxes,
                        const int64_t* __restrict__ image_index,
                        const int64_t* __restrict__ matched_index, scalar_t* __restrict__ out,
                        int64_t num_boxes, int size) {
  __shared__ AxisTap<acc_t> taps[kMaxAxisTaps];
  const int bins = size * size;
  for (int64_t k = blockIdx.x; k < num_boxes; k += gridDim.x) {
    // Every thread of the block reads the same k, so every branch below is uniform over the
    // block and no thread misses a barrier.
    const int64_t img = image_index[k];
    const bool img_ok = img >= 0 && img < table.total;
    // A box of another launch's images is that launch's to write; a box of no image is the
    // first launch's (zeros).
    if (img_ok ? (img < table.first || img >= table.first + table.num) : table.first != 0) {
      continue;
    }
    const MaskPlanes p = img_ok ? table.planes[img - table.first] : MaskPlanes{};
    const int64_t gt = matched_index[k];
    const scalar_t* b = boxes + 4 * k;
    const RoiGeometry<acc_t> g = mask_target_geometry<acc_t>(
        static_cast<acc_t>(b[0]), static_cast<acc_t>(b[1]), static_cast<acc_t>(b[2]),
        static_cast<acc_t>(b[3]), size);
    const bool active = img_ok && gt >= 0 && gt < p.count && p.data != nullptr &&
                        g.grid_h > 0 && g.grid_w > 0;
    const int ny = active ? size * g.grid_h : 0;  // each at most 2^13 * 1024: fits int
    const int nx = active ? size * g.grid_w : 0;
    const bool table_taps = active && static_cast<int64_t>(ny) + nx <= kMaxAxisTaps;
    __syncthreads();  // the previous box's readers are done with the taps
    if (table_taps) {
      for (int i = threadIdx.x; i < ny + nx; i += blockDim.x) {
        if (i < ny) {
          taps[i] = mask_target_tap(g.start_h, g.bin_h, i / g.grid_h, i % g.grid_h, g.grid_h,
                                    p.height);
        } else {
          const int j = i - ny;
          taps[i] = mask_target_tap(g.start_w, g.bin_w, j / g.grid_w, j % g.grid_w, g.grid_w,
                                    p.width);
        }
      }
    }
    __syncthreads();
    scalar_t* o = out + k * bins;
    if (!active) {
      for (int e = threadIdx.x; e < bins; e += blockDim.x) o[e] = scalar_t(0);
      continue;
    }
    const uint8_t* plane = p.data + gt * p.stride_g;
    for (int e = threadIdx.x; e < bins; e += blockDim.x) {
      const int ph = e / size, pw = e - (e / size) * size;
      acc_t v;
      if (table_taps) {
        const AxisTap<acc_t>* r = taps + ph * g.grid_h;
        const AxisTap<acc_t>* c = taps + ny + pw * g.grid_w;
        v = mask_target_bin<acc_t>(plane, p.stride_y, p.stride_x, g,
                                   [r](int iy) { return r[iy]; }, [c](int ix) { return c[ix]; });
      } else {
        v = mask_target_bin<acc_t>(
            plane, p.stride_y, p.stride_x, g,
            [&](int iy) {
              return mask_target_tap(g.start_h, g.bin_h, ph, iy, g.grid_h, p.height);
            },
            [&](int ix) {
              return mask_target_tap(g.start_w, g.bin_w, pw, ix, g.grid_w, p.width);
            });
      }
      o[e] = static_cast<scalar_t>(v);
    }
  }
}

at::Tensor mask_targets_cuda(const at::TensorList masks, const at::Tensor& boxes,
                             const at::Tensor& image_index, const at::Tensor& matched_index,
                             int64_t size) {
  const std::vector<MaskPlanes> planes =
      check_mask_targets_inputs(masks, boxes, image_index, matched_index, size);
  DeviceGuard guard(boxes.device());
  const int64_t k = boxes.size(0);
  at::Tensor out = at::empty({k, size, size}, boxes.options());
  if (k == 0) return out;
  const at::Tensor b = boxes.contiguous();
  const at::Tensor img = image_index.contiguous();
  const at::Tensor gt = matched_index.contiguous();
  const auto stream = current_stream();
  const int64_t total = static_cast<int64_t>(planes.size());
  const unsigned int blocks =
      static_cast<unsigned int>(std::min<int64_t>(k, int64_t(1) << 20));  // grid-stride rest
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "mask_targets",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // At least one launch, even with no images: it writes the zeros of unmatched boxes.
    for (int64_t first = 0; first == 0 || first < total; first += kImagesPerLaunch) {
      MaskTable table{};
      table.first = first;
      table.num = std::min<int64_t>(kImagesPerLaunch, total - first);
      table.total = total;
      for (int64_t i = 0; i < table.num; ++i) table.planes[i] = planes[first + i];
      launch(mask_targets_kernel<scalar_t, acc_t>, blocks, kThreads, stream, table,
             b.const_data_ptr<scalar_t>(), img.const_data_ptr<int64_t>(),
             gt.const_data_ptr<int64_t>(), out.mutable_data_ptr<scalar_t>(), k,
             static_cast<int>(size));
    }
  });
  return out;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("mask_targets", &mask_targets_cuda);
}

}  // namespace maskrcnn_fast
