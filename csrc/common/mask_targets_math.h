#pragma once
// Mask R-CNN's mask targets (torchvision's project_masks_on_boxes) read straight from the
// uint8/bool ground-truth masks, shared by the CPU and CUDA kernels.
//
// project_masks_on_boxes is roi_align(gt_masks[:, None].float(), rois, (M, M), spatial_scale=1,
// sampling_ratio=-1, aligned=False). A mask pixel read as uint8 and converted to the
// accumulation type is exactly the value the float copy holds (0..255 are exact in every
// floating type), and the sums below are roi_align_bin's, in its order: the result is bitwise
// roi_align on masks.to(boxes.dtype), without the G x H x W float copy.
#include "common/roi_align_math.h"

namespace maskrcnn_fast {

// One image's ground-truth masks [count, height, width], any strides (in elements = bytes).
struct MaskPlanes {
  const uint8_t* data;  // bool and uint8 masks alike: a bool is one byte, 0 or 1
  int64_t count;
  int height, width;
  int64_t stride_g, stride_y, stride_x;
};

// The geometry of one proposal: roi_align's with spatial_scale 1, adaptive sampling,
// aligned=False (boxes under one pixel count as one pixel).
template <typename acc_t>
MF_HOST_DEVICE RoiGeometry<acc_t> mask_target_geometry(acc_t x1, acc_t y1, acc_t x2, acc_t y2,
                                                       int size) {
  return roi_geometry<acc_t>(x1, y1, x2, y2, acc_t(1), size, size, /*sampling_ratio=*/-1,
                             /*aligned=*/false);
}

// The mask target of one output bin from the bin's row taps (row(iy), iy < g.grid_h) and
// column taps (col(ix), ix < g.grid_w): roi_align_bin's samples and order of operations, with
// the bilinear weights formed by bilinear_from_axes (bitwise bilinear()'s). The four pixels of a
// sample come from rows(ay), the pair of mask rows of its row tap, whose read(b, p) puts the
// pixels (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high) in p[0..3]: a plane
// in memory (mask_target_bin) or a packed crop (packed_mask_targets_math.h).
//
// A sample whose four pixels are all 0 is skipped: its term is +0 exactly (the weights are
// finite and non-negative) and the sum is never -0, so skipping it leaves the sum's bits alone
// while saving the work on the (large) empty parts of a mask. For the same reason a tap whose
// pixels are all known to be 0 may come as invalid (skipped without reading).
template <typename acc_t, typename RowTap, typename ColTap, typename Rows>
MF_HOST_DEVICE acc_t mask_target_sum(const RoiGeometry<acc_t>& g, RowTap row, ColTap col,
                                     Rows rows) {
  acc_t sum = acc_t(0);
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const AxisTap<acc_t> ay = row(iy);
    if (!ay.valid) continue;  // every sample of this row is outside the mask
    const auto pair = rows(ay);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const Bilinear<acc_t> b = bilinear_from_axes(ay, col(ix));
      if (!b.valid) continue;
      uint8_t p[4];
      pair.read(b, p);
      if ((p[0] | p[1] | p[2] | p[3]) == 0) continue;
      const acc_t v1 = static_cast<acc_t>(p[0]);
      const acc_t v2 = static_cast<acc_t>(p[1]);
      const acc_t v3 = static_cast<acc_t>(p[2]);
      const acc_t v4 = static_cast<acc_t>(p[3]);
      sum += b.w1 * v1 + b.w2 * v2 + b.w3 * v3 + b.w4 * v4;
    }
  }
  return sum / g.count;
}

// Two rows of a plane in memory (any strides).
struct StridedRows {
  const uint8_t* lo;
  const uint8_t* hi;
  int64_t sx;
  template <typename T>
  MF_HOST_DEVICE void read(const Bilinear<T>& b, uint8_t* p) const {
    p[0] = lo[b.x_low * sx];
    p[1] = lo[b.x_high * sx];
    p[2] = hi[b.x_low * sx];
    p[3] = hi[b.x_high * sx];
  }
};

// mask_target_sum on a plane in memory: `plane` at (0, 0), sy and sx the strides of a row and a
// column.
template <typename acc_t, typename RowTap, typename ColTap>
MF_HOST_DEVICE acc_t mask_target_bin(const uint8_t* plane, int64_t sy, int64_t sx,
                                     const RoiGeometry<acc_t>& g, RowTap row, ColTap col) {
  return mask_target_sum<acc_t>(g, row, col, [=](const AxisTap<acc_t>& ay) {
    return StridedRows{plane + ay.low * sy, plane + ay.high * sy, sx};
  });
}

// Row tap iy of bin ph (or column tap of bin pw): one side of bilinear() for that sample.
template <typename acc_t>
MF_HOST_DEVICE AxisTap<acc_t> mask_target_tap(acc_t start, acc_t bin, int p, int i, int grid,
                                              int size) {
  return axis_tap(sample_coord(start, bin, p, i, grid), size);
}

}  // namespace maskrcnn_fast
