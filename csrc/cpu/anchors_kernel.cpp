// grid_anchors on the CPU: all levels in one parallel loop over the flat output.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/anchors_checks.h"
#include "common/anchors_math.h"

namespace maskrcnn_fast {
namespace {

// One row (fixed y) of a level, anchors [p, p + n) of it: x coordinates come ready from the
// level's row template, y coordinates are the template's cell y plus the row's shift. Straight
// copies and adds over 4-float groups: the loop vectorises.
template <typename T, typename acc_t>
void fill_row(const T* __restrict__ tmpl, T sy, T* __restrict__ out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    out[4 * j + 0] = tmpl[4 * j + 0];
    out[4 * j + 1] = anchor_add<T, acc_t>(sy, tmpl[4 * j + 1]);
    out[4 * j + 2] = tmpl[4 * j + 2];
    out[4 * j + 3] = anchor_add<T, acc_t>(sy, tmpl[4 * j + 3]);
  }
}

// Anchors [begin, end) of the flat output, row by row. A level's row template holds, for every
// (x, a) of a row, the final x1, x2 and the cell anchor's y1, y2: the same sums as
// grid_anchor_at, in the same rounding, with the x work done once per level instead of per row.
template <typename T, typename acc_t>
void anchors_chunk(const AnchorLayout& layout, const T* cell_anchors, T* out, int64_t begin,
                   int64_t end) {
  std::vector<T> tmpl;
  int64_t i = begin;
  for (int l = anchor_level_of(layout, begin); i < end && l < layout.num_levels; ++l) {
    const AnchorLevel& lv = layout.level[l];
    const int64_t level_end =
        l + 1 < layout.num_levels ? layout.level[l + 1].begin : layout.total;
    const int64_t stop = end < level_end ? end : level_end;
    if (i >= stop) continue;
    const int64_t A = lv.num_cell;
    const int64_t row_len = lv.grid_w * A;
    const T* cell = cell_anchors + lv.cell_begin * 4;
    tmpl.resize(static_cast<size_t>(row_len * 4));
    for (int64_t x = 0; x < lv.grid_w; ++x) {
      const T sx = anchor_shift<T, acc_t>(x * lv.stride_w);
      for (int64_t a = 0; a < A; ++a) {
        T* t = tmpl.data() + (x * A + a) * 4;
        t[0] = anchor_add<T, acc_t>(sx, cell[a * 4 + 0]);
        t[1] = cell[a * 4 + 1];
        t[2] = anchor_add<T, acc_t>(sx, cell[a * 4 + 2]);
        t[3] = cell[a * 4 + 3];
      }
    }
    while (i < stop) {
      const int64_t local = i - lv.begin;
      const int64_t y = local / row_len;
      const int64_t p = local - y * row_len;
      const int64_t n = std::min(stop - i, row_len - p);
      fill_row<T, acc_t>(tmpl.data() + p * 4, anchor_shift<T, acc_t>(y * lv.stride_h),
                         out + i * 4, n);
      i += n;
    }
  }
}

at::Tensor grid_anchors_cpu(const at::Tensor& cell_anchors, at::IntArrayRef num_cell_anchors,
                            at::IntArrayRef grid_sizes, at::IntArrayRef strides) {
  const AnchorLayout layout =
      check_grid_anchors(cell_anchors, num_cell_anchors, grid_sizes, strides);
  at::Tensor out = at::empty({layout.total, 4}, cell_anchors.options());
  if (layout.total == 0) return out;
  const at::Tensor cell = cell_anchors.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cell.scalar_type(), "grid_anchors",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* cell_ptr = cell.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    // Under 1 ns per anchor: chunks of 16k keep the thread hand-off cost small.
    at::parallel_for(0, layout.total, 16384, [&](int64_t begin, int64_t end) {
      anchors_chunk<scalar_t, acc_t>(layout, cell_ptr, out_ptr, begin, end);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("grid_anchors", &grid_anchors_cpu);
}

}  // namespace maskrcnn_fast
