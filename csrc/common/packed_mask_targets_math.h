#pragma once
// Mask R-CNN's mask targets from packed instance masks (each mask stored as its crop inside its
// box, maskrcnn_fast.structures.PackedMasks), with the nearest resize of the masks folded into
// the sampling. Shared by the CPU and CUDA kernels.
//
// The dense equivalent of instance i: its mask at full size H x W in the source frame, resized
// to H' x W' by torch's nearest rule (F.interpolate(mode="nearest"), as torchvision's transform
// resizes masks), then mask_targets (roi_align on the resized plane). Here the taps are those of
// roi_align on the H' x W' plane; a tap on resized row ry reads source row
// nearest_source_index(ry, H, H', ...), which is crop row (that - y0) when it falls inside the crop
// and a row of zeros otherwise (columns likewise). The sums are mask_target_sum's, in its
// order, over the same samples and the same pixel values: the result is bitwise mask_targets on
// the dense resized masks, without them.
#include "common/mask_targets_math.h"

namespace maskrcnn_fast {

// The columns of an instances row: (offset into data, x0, y0, width, height) of the crop in the
// source frame, the source frame (H, W) and the resized frame (H', W').
constexpr int kInstanceColumns = 9;
enum InstanceColumn { kOffset = 0, kX0, kY0, kWidth, kHeight, kSrcH, kSrcW, kOutH, kOutW };

// torch's "nearest" resize (ATen's nearest_idx without a scale: F.interpolate with size=out, or
// scale_factor with recompute_scale_factor=True): output index i of a resize from `in` to `out`
// pixels reads source index i when out == in, i >> 1 when out == 2 in, else
// floor(i * scale) in float32, at most in - 1, for scale = in / out in float32 (nearest_scale,
// computed once per axis: a float division is a subroutine call on the GPU). -1 when in == 0 (no
// source pixel).
MF_HOST_DEVICE float nearest_scale(int64_t in, int64_t out) {
  return out > 0 ? static_cast<float>(in) / static_cast<float>(out) : 0.0f;
}

MF_HOST_DEVICE int64_t nearest_source_index(int64_t i, int64_t in, int64_t out, float scale) {
  if (out == in) return i;
  if (out == 2 * in) return i >> 1;
  const int64_t s = static_cast<int64_t>(floorf(static_cast<float>(i) * scale));
  return s < in - 1 ? s : in - 1;
}

// Whether an instances row describes a crop that can be read: non-negative frames that fit in
// int32, a crop (x0, y0, width, height) inside its source frame, and its width * height bytes
// at offset within the data's `data_size` bytes. The CPU checks raise for a row that is not (with
// the reason), the CUDA kernel writes zeros for its boxes.
MF_HOST_DEVICE bool packed_instance_ok(const int64_t* r, int64_t data_size) {
  const int64_t kInt32Max = 2147483647;
  for (int c = kSrcH; c <= kOutW; ++c) {
    if (r[c] < 0 || r[c] > kInt32Max) return false;
  }
  if (r[kX0] < 0 || r[kY0] < 0 || r[kWidth] < 0 || r[kHeight] < 0) return false;
  if (r[kWidth] > r[kSrcW] - r[kX0] || r[kHeight] > r[kSrcH] - r[kY0]) return false;
  // width * height <= W * H < 2^62: no overflow; offset + bytes compared without an addition.
  return r[kOffset] >= 0 && r[kOffset] <= data_size &&
         r[kWidth] * r[kHeight] <= data_size - r[kOffset];
}

// One axis of an instance: the source frame's size, the resized frame's, the crop's first index
// and extent along it, and the resize's nearest_scale.
struct PackedAxis {
  int source, resized, first, extent;
  float scale;
};

// The axis of an instances row `r`: rows (y) or columns (x).
MF_HOST_DEVICE PackedAxis packed_axis(const int64_t* r, bool rows) {
  PackedAxis a;
  a.source = static_cast<int>(r[rows ? kSrcH : kSrcW]);
  a.resized = static_cast<int>(r[rows ? kOutH : kOutW]);
  a.first = static_cast<int>(r[rows ? kY0 : kX0]);
  a.extent = static_cast<int>(r[rows ? kHeight : kWidth]);
  a.scale = nearest_scale(a.source, a.resized);
  return a;
}

// The crop index (row or column) that resized index r reads, or -1 outside the crop.
MF_HOST_DEVICE int packed_crop_index(int r, const PackedAxis& a) {
  const int64_t c = nearest_source_index(r, a.source, a.resized, a.scale) - a.first;
  return c >= 0 && c < a.extent ? static_cast<int>(c) : -1;
}

// Row tap iy of bin ph (or column tap): mask_target_tap on the resized plane, its two pixel
// indices turned into crop indices (-1: outside the crop, a zero pixel). A tap whose two pixels
// are both outside the crop reads only zeros: it comes as invalid, and mask_target_sum skips
// its samples, as it skips all-zero samples (the same sum).
template <typename acc_t>
MF_HOST_DEVICE AxisTap<acc_t> packed_mask_target_tap(acc_t start, acc_t bin, int p, int i,
                                                      int grid, const PackedAxis& a) {
  AxisTap<acc_t> t = mask_target_tap(start, bin, p, i, grid, a.resized);
  if (!t.valid) return t;
  t.low = packed_crop_index(t.low, a);
  t.high = packed_crop_index(t.high, a);
  if (t.low < 0 && t.high < 0) {
    t.valid = false;
    t.low = t.high = 0;
  }
  return t;
}

// Two rows of a crop (row-major, `width` bytes a row), from a row tap of packed_mask_target_tap;
// a row or column index of -1 reads 0.
struct PackedRows {
  const uint8_t* lo;  // nullptr: the row is outside the crop
  const uint8_t* hi;
  template <typename T>
  MF_HOST_DEVICE void read(const Bilinear<T>& b, uint8_t* p) const {
    const bool xl = b.x_low >= 0, xh = b.x_high >= 0;
    p[0] = lo != nullptr && xl ? lo[b.x_low] : uint8_t(0);
    p[1] = lo != nullptr && xh ? lo[b.x_high] : uint8_t(0);
    p[2] = hi != nullptr && xl ? hi[b.x_low] : uint8_t(0);
    p[3] = hi != nullptr && xh ? hi[b.x_high] : uint8_t(0);
  }
};

// The mask target of one output bin, from the bin's taps (packed_mask_target_tap) and the crop.
template <typename acc_t, typename RowTap, typename ColTap>
MF_HOST_DEVICE acc_t packed_mask_target_bin(const uint8_t* crop, int64_t width,
                                            const RoiGeometry<acc_t>& g, RowTap row, ColTap col) {
  return mask_target_sum<acc_t>(g, row, col, [=](const AxisTap<acc_t>& ay) {
    return PackedRows{ay.low >= 0 ? crop + ay.low * width : nullptr,
                      ay.high >= 0 ? crop + ay.high * width : nullptr};
  });
}

}  // namespace maskrcnn_fast
