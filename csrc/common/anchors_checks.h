#pragma once
// Input checks and layout of grid_anchors, shared by the CPU and CUDA entry points so that both
// raise the same messages (host only).
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "common/anchors_math.h"
#include "common/checks.h"

namespace maskrcnn_fast {

// Validates grid_anchors' arguments and lays the levels out in the flat output.
inline AnchorLayout check_grid_anchors(const at::Tensor& cell_anchors,
                                       at::IntArrayRef num_cell_anchors,
                                       at::IntArrayRef grid_sizes, at::IntArrayRef strides) {
  check_floating(cell_anchors, "cell_anchors");
  check_dim(cell_anchors, 2, "cell_anchors", "Tensor[sum(num_cell_anchors), 4]");
  check_last_dim(cell_anchors, 4, "cell_anchors", "Tensor[sum(num_cell_anchors), 4]");
  const int64_t levels = static_cast<int64_t>(num_cell_anchors.size());
  TORCH_CHECK(levels >= 1 && levels <= kMaxAnchorLevels,
              "num_cell_anchors must have between 1 and ", kMaxAnchorLevels,
              " entries (one per level), got ", levels);
  TORCH_CHECK(static_cast<int64_t>(grid_sizes.size()) == 2 * levels,
              "grid_sizes must hold one (height, width) pair per level (", 2 * levels,
              " values), got ", grid_sizes.size());
  TORCH_CHECK(static_cast<int64_t>(strides.size()) == 2 * levels,
              "strides must hold one (height, width) pair per level (", 2 * levels,
              " values), got ", strides.size());
  AnchorLayout layout{};
  layout.num_levels = static_cast<int>(levels);
  int64_t begin = 0, cell_begin = 0;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t a = num_cell_anchors[l];
    const int64_t gh = grid_sizes[2 * l], gw = grid_sizes[2 * l + 1];
    const int64_t sh = strides[2 * l], sw = strides[2 * l + 1];
    TORCH_CHECK(a >= 0, "num_cell_anchors must be non-negative, got ", num_cell_anchors);
    TORCH_CHECK(gh >= 0 && gw >= 0, "grid_sizes must be non-negative, got ", grid_sizes);
    TORCH_CHECK(sh >= 0 && sw >= 0, "strides must be non-negative, got ", strides);
    AnchorLevel& lv = layout.level[l];
    lv.begin = begin;
    lv.grid_w = gw > 0 ? gw : 1;  // a divisor in the CUDA index math; empty levels skip it
    lv.num_cell = a > 0 ? a : 1;
    lv.cell_begin = cell_begin;
    lv.stride_h = sh;
    lv.stride_w = sw;
    begin += gh * gw * a;
    cell_begin += a;
  }
  TORCH_CHECK(cell_anchors.size(0) == cell_begin,
              "cell_anchors must be Tensor[sum(num_cell_anchors), 4] = Tensor[", cell_begin,
              ", 4], got a tensor of shape ", cell_anchors.sizes());
  layout.total = begin;
  return layout;
}

}  // namespace maskrcnn_fast
