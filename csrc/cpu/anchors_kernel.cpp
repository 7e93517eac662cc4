// grid_anchors on the CPU: all levels in one parallel loop over the flat output.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/box_checks.h"
#include "common/box_math.h"

namespace maskrcnn_fast {
namespace {

// Anchors [begin, end) of the flat output. The level and position are found once per chunk;
// after that the (y, x, a) counters advance without divisions, and writes are sequential.
template <typename T, typename acc_t>
void anchors_chunk(const AnchorLayout& layout, const T* cell_anchors, T* out, int64_t begin,
                   int64_t end) {
  int64_t i = begin;
  for (int l = anchor_level_of(layout, begin); i < end && l < layout.num_levels; ++l) {
    const AnchorLevel& lv = layout.level[l];
    const int64_t level_end =
        l + 1 < layout.num_levels ? layout.level[l + 1].begin : layout.total;
    const int64_t stop = end < level_end ? end : level_end;
    if (i >= stop) continue;
    const int64_t local = i - lv.begin;
    const int64_t loc = local / lv.num_cell;
    int64_t a = local - loc * lv.num_cell;
    int64_t y = loc / lv.grid_w;
    int64_t x = loc - y * lv.grid_w;
    const T* cell = cell_anchors + lv.cell_begin * 4;
    for (; i < stop; ++i) {
      write_anchor<T, acc_t>(cell + a * 4, x * lv.stride_w, y * lv.stride_h, out + i * 4);
      if (++a == lv.num_cell) {
        a = 0;
        if (++x == lv.grid_w) {
          x = 0;
          ++y;
        }
      }
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
    // A few ns per anchor: chunks of 16k keep the thread start-up cost small.
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
