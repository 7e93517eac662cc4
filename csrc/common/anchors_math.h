#pragma once
// Anchor grids: the per-element arithmetic of grid_anchors, shared by CPU and CUDA (and by
// rpn_proposals, which computes its anchors on the fly).
//
// Semantics are torchvision's AnchorGenerator.grid_anchors: the integer shift grid is added to
// the cell anchors of type T, one rounding as torchvision's tensor expression rounds it.
#include <cstdint>

#include "common/macros.h"

namespace maskrcnn_fast {

// Upper bound on FPN levels in one grid_anchors call: the CUDA kernel receives the per-level
// layout by value (no host-to-device copy, so it can be captured in a CUDA graph).
constexpr int kMaxAnchorLevels = 16;

// Where one level's anchors sit in the flat output and how they are laid out.
struct AnchorLevel {
  int64_t begin;         // first anchor of this level in the output
  int64_t grid_w;        // feature-map width (locations per row)
  int64_t num_cell;      // anchors per location A
  int64_t cell_begin;    // first row of this level's cell anchors
  int64_t stride_h, stride_w;
};

struct AnchorLayout {
  AnchorLevel level[kMaxAnchorLevels];
  int num_levels;
  int64_t total;  // anchors of all levels
};

// One coordinate of a grid anchor: the integer shift is first rounded to the output type, the
// sum is rounded once (torchvision adds an int32 shift grid to the cell anchors of type T).
template <typename T, typename acc_t>
MF_HOST_DEVICE T anchor_shift(int64_t shift) {
  return static_cast<T>(static_cast<acc_t>(shift));
}
template <typename T, typename acc_t>
MF_HOST_DEVICE T anchor_add(T shift, T cell) {
  return static_cast<T>(static_cast<acc_t>(shift) + static_cast<acc_t>(cell));
}
template <typename T, typename acc_t>
MF_HOST_DEVICE T anchor_coord(int64_t shift, T cell) {
  return anchor_add<T, acc_t>(anchor_shift<T, acc_t>(shift), cell);
}

// Writes anchor (x, y, a) of a level: the cell anchor a moved to (x * stride_w, y * stride_h).
template <typename T, typename acc_t>
MF_HOST_DEVICE void write_anchor(const T* cell, int64_t shift_x, int64_t shift_y, T* out) {
  out[0] = anchor_coord<T, acc_t>(shift_x, cell[0]);
  out[1] = anchor_coord<T, acc_t>(shift_y, cell[1]);
  out[2] = anchor_coord<T, acc_t>(shift_x, cell[2]);
  out[3] = anchor_coord<T, acc_t>(shift_y, cell[3]);
}

// The level of flat anchor index i (levels are few: a linear scan beats a search).
MF_HOST_DEVICE int anchor_level_of(const AnchorLayout& layout, int64_t i) {
  int l = 0;
  while (l + 1 < layout.num_levels && i >= layout.level[l + 1].begin) ++l;
  return l;
}

// Anchor i of the flat output (levels, then locations y-major, then cell anchors).
template <typename T, typename acc_t>
MF_HOST_DEVICE void grid_anchor_at(const AnchorLayout& layout, const T* cell_anchors, int64_t i,
                                   T* out) {
  const AnchorLevel& lv = layout.level[anchor_level_of(layout, i)];
  const int64_t local = i - lv.begin;
  const int64_t loc = local / lv.num_cell;
  const int64_t a = local - loc * lv.num_cell;
  const int64_t y = loc / lv.grid_w;
  const int64_t x = loc - y * lv.grid_w;
  write_anchor<T, acc_t>(cell_anchors + (lv.cell_begin + a) * 4, x * lv.stride_w,
                         y * lv.stride_h, out);
}

}  // namespace maskrcnn_fast
