// Mask targets on the CPU: torchvision's project_masks_on_boxes for the proposals of all
// images, read straight from the uint8/bool ground-truth masks (common/mask_targets_math.h).
//
// Work items are output rows (proposal k, bin row ph), so that a few large proposals still
// use every thread. A thread keeps the column taps (size * grid_w) of the proposal it is on and
// computes the grid_h row taps of each row; every sample then costs two table reads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/mask_targets_checks.h"
#include "common/mask_targets_math.h"

namespace maskrcnn_fast {
namespace {

template <typename scalar_t>
void mask_targets_impl(const std::vector<MaskPlanes>& planes, const scalar_t* boxes,
                       const int64_t* image_index, const int64_t* matched_index, scalar_t* out,
                       int64_t num_boxes, int size) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t bins = static_cast<int64_t>(size) * size;
  at::parallel_for(0, num_boxes * size, 1, [&](int64_t begin, int64_t end) {
    std::vector<AxisTap<acc_t>> cols, rows;
    int64_t cols_of = -1;  // the proposal whose column taps `cols` holds
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / size;
      const int ph = static_cast<int>(item - k * size);
      scalar_t* o = out + k * bins + static_cast<int64_t>(ph) * size;
      const scalar_t* b = boxes + 4 * k;
      const RoiGeometry<acc_t> g = mask_target_geometry<acc_t>(
          static_cast<acc_t>(b[0]), static_cast<acc_t>(b[1]), static_cast<acc_t>(b[2]),
          static_cast<acc_t>(b[3]), size);
      // Indices were checked by check_mask_targets_indices_cpu.
      const MaskPlanes& p = planes[image_index[k]];
      if (p.data == nullptr || g.grid_h == 0 || g.grid_w == 0) {
        for (int pw = 0; pw < size; ++pw) o[pw] = scalar_t(0);
        continue;
      }
      if (cols_of != k) {
        cols.resize(static_cast<size_t>(size) * g.grid_w);
        for (int pw = 0; pw < size; ++pw) {
          for (int ix = 0; ix < g.grid_w; ++ix) {
            cols[pw * g.grid_w + ix] =
                mask_target_tap(g.start_w, g.bin_w, pw, ix, g.grid_w, p.width);
          }
        }
        cols_of = k;
      }
      rows.resize(g.grid_h);
      for (int iy = 0; iy < g.grid_h; ++iy) {
        rows[iy] = mask_target_tap(g.start_h, g.bin_h, ph, iy, g.grid_h, p.height);
      }
      const uint8_t* plane = p.data + matched_index[k] * p.stride_g;
      const AxisTap<acc_t>* r = rows.data();
      for (int pw = 0; pw < size; ++pw) {
        const AxisTap<acc_t>* c = cols.data() + static_cast<int64_t>(pw) * g.grid_w;
        const acc_t v = mask_target_bin<acc_t>(
            plane, p.stride_y, p.stride_x, g, [r](int iy) { return r[iy]; },
            [c](int ix) { return c[ix]; });
        o[pw] = static_cast<scalar_t>(v);
      }
    }
  });
}

at::Tensor mask_targets_cpu(const at::TensorList masks, const at::Tensor& boxes,
                            const at::Tensor& image_index, const at::Tensor& matched_index,
                            int64_t size) {
  const std::vector<MaskPlanes> planes =
      check_mask_targets_inputs(masks, boxes, image_index, matched_index, size);
  const int64_t k = boxes.size(0);
  at::Tensor out = at::empty({k, size, size}, boxes.options());
  if (k == 0) return out;
  check_mask_targets_indices_cpu(planes, image_index, matched_index);
  const at::Tensor b = boxes.contiguous();
  const at::Tensor img = image_index.contiguous();
  const at::Tensor gt = matched_index.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "mask_targets",
                                  [&] {
    mask_targets_impl<scalar_t>(planes, b.const_data_ptr<scalar_t>(),
                                img.const_data_ptr<int64_t>(), gt.const_data_ptr<int64_t>(),
                                out.mutable_data_ptr<scalar_t>(), k, static_cast<int>(size));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("mask_targets", &mask_targets_cpu);
}

}  // namespace maskrcnn_fast
