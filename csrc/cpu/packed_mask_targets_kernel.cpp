// Mask targets from packed instance masks on the CPU: torchvision's project_masks_on_boxes after
// torchvision's nearest resize of the masks, for the boxes of all images, read straight from the
// crops (common/packed_mask_targets_math.h).
//
// Work items are output rows (box k, bin row ph), as in mask_targets: a thread keeps the column
// taps (size * grid_w, already mapped to crop columns) of the box it is on and computes the
// grid_h row taps of each row.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/packed_mask_targets_checks.h"
#include "common/packed_mask_targets_math.h"

namespace maskrcnn_fast {
namespace {

template <typename scalar_t>
void packed_mask_targets_impl(const uint8_t* data, const int64_t* instances,
                              const scalar_t* boxes, const int64_t* instance_index,
                              scalar_t* out, int64_t num_boxes, int size) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t bins = static_cast<int64_t>(size) * size;
  at::parallel_for(0, num_boxes * size, 1, [&](int64_t begin, int64_t end) {
    std::vector<AxisTap<acc_t>> cols, rows;
    int64_t cols_of = -1;  // the box whose column taps `cols` holds
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / size;
      const int ph = static_cast<int>(item - k * size);
      scalar_t* o = out + k * bins + static_cast<int64_t>(ph) * size;
      const scalar_t* b = boxes + 4 * k;
      const RoiGeometry<acc_t> g = mask_target_geometry<acc_t>(
          static_cast<acc_t>(b[0]), static_cast<acc_t>(b[1]), static_cast<acc_t>(b[2]),
          static_cast<acc_t>(b[3]), size);
      // Rows and indices were checked by check_packed_mask_targets_data_cpu.
      const int64_t* r = instances + instance_index[k] * kInstanceColumns;
      const PackedAxis ay = packed_axis(r, /*rows=*/true);
      const PackedAxis ax = packed_axis(r, /*rows=*/false);
      if (ay.extent == 0 || ax.extent == 0 || g.grid_h == 0 || g.grid_w == 0) {
        for (int pw = 0; pw < size; ++pw) o[pw] = scalar_t(0);
        continue;
      }
      if (cols_of != k) {
        cols.resize(static_cast<size_t>(size) * g.grid_w);
        for (int pw = 0; pw < size; ++pw) {
          for (int ix = 0; ix < g.grid_w; ++ix) {
            cols[pw * g.grid_w + ix] =
                packed_mask_target_tap(g.start_w, g.bin_w, pw, ix, g.grid_w, ax);
          }
        }
        cols_of = k;
      }
      rows.resize(g.grid_h);
      for (int iy = 0; iy < g.grid_h; ++iy) {
        rows[iy] = packed_mask_target_tap(g.start_h, g.bin_h, ph, iy, g.grid_h, ay);
      }
      const uint8_t* crop = data + r[kOffset];
      const AxisTap<acc_t>* rt = rows.data();
      for (int pw = 0; pw < size; ++pw) {
        const AxisTap<acc_t>* c = cols.data() + static_cast<int64_t>(pw) * g.grid_w;
        const acc_t v = packed_mask_target_bin<acc_t>(
            crop, r[kWidth], g, [rt](int iy) { return rt[iy]; }, [c](int ix) { return c[ix]; });
        o[pw] = static_cast<scalar_t>(v);
      }
    }
  });
}

at::Tensor packed_mask_targets_cpu(const at::Tensor& data, const at::Tensor& instances,
                                   const at::Tensor& boxes, const at::Tensor& instance_index,
                                   int64_t size) {
  check_packed_mask_targets_inputs(data, instances, boxes, instance_index, size);
  const int64_t k = boxes.size(0);
  at::Tensor out = at::empty({k, size, size}, boxes.options());
  const at::Tensor rows = instances.contiguous();
  const at::Tensor index = instance_index.contiguous();
  check_packed_mask_targets_data_cpu(rows.const_data_ptr<int64_t>(), rows.size(0), data.numel(),
                                     index.const_data_ptr<int64_t>(), k);
  if (k == 0) return out;
  const at::Tensor d = data.contiguous();
  const at::Tensor b = boxes.contiguous();
  // An empty data buffer is never read (every crop is empty): it may have no storage.
  const uint8_t* bytes = d.numel() > 0 ? static_cast<const uint8_t*>(d.const_data_ptr()) : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(),
                                  "packed_mask_targets", [&] {
    packed_mask_targets_impl<scalar_t>(bytes, rows.const_data_ptr<int64_t>(),
                                       b.const_data_ptr<scalar_t>(),
                                       index.const_data_ptr<int64_t>(),
                                       out.mutable_data_ptr<scalar_t>(), k,
                                       static_cast<int>(size));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("packed_mask_targets", &packed_mask_targets_cpu);
}

}  // namespace maskrcnn_fast
