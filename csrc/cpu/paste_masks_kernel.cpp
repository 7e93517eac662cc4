// paste_masks on the CPU: one parallel loop over the output rows of all masks.
//
// A row outside its mask's pasted rectangle is a memset. Inside, the padded mask is resized
// along x once per source row (the x taps are computed once per mask), and each output row
// blends two such rows, so the per-pixel work is two multiplies and an add that vectorise.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "common/paste_masks_checks.h"
#include "common/paste_masks_math.h"

namespace maskrcnn_fast {
namespace {

struct PasteProblem {
  int64_t n, mask_h, mask_w, out_h, out_w, padding;
  const void* boxes;
  PasteBoxType box_type;
  int64_t box_s0, box_s1;
  const int64_t* image_index;  // nullptr: every mask is in image 0
  int64_t index_s0;
  const int64_t* image_sizes;  // nullptr: every image is out_h x out_w
  int64_t sizes_s0, sizes_s1;
  double box_scale;  // (M + 2 padding) / M, as torchvision's Python float
};

// Per-thread state for the mask being pasted: its geometry, its x taps and the two most
// recent x-resized source rows (the rows an output row blends; source rows only move forward
// as the output row does, so two slots never recompute a row within a mask).
template <typename scalar_t, typename acc_t>
struct MaskState {
  int64_t n = -1;
  bool empty = true;
  PasteGeometry<acc_t> g{};
  std::vector<AxisTaps<acc_t>> xtaps;
  std::vector<acc_t> src;  // one padded source row
  std::vector<acc_t> rows[2];
  int64_t row_id[2] = {-1, -1};

  const scalar_t* mask = nullptr;
  int64_t ms1 = 0, ms2 = 0;

  void load(const PasteProblem& p, const scalar_t* masks, int64_t ms0, int64_t ms1_,
            int64_t ms2_, int64_t n_) {
    n = n_;
    row_id[0] = row_id[1] = -1;
    mask = masks + n * ms0;
    ms1 = ms1_;
    ms2 = ms2_;
    int64_t box[4];
    const bool ok =
        load_expanded_box(p.boxes, p.box_type, n * p.box_s0, p.box_s1, p.box_scale, box);
    const int64_t img = p.image_index ? p.image_index[n * p.index_s0] : 0;
    int64_t im_h = p.out_h, im_w = p.out_w;
    if (p.image_sizes) {
      im_h = mf_min(p.image_sizes[img * p.sizes_s0], p.out_h);
      im_w = mf_min(p.image_sizes[img * p.sizes_s0 + p.sizes_s1], p.out_w);
    }
    g = paste_geometry<acc_t>(box, p.mask_h + 2 * p.padding, p.mask_w + 2 * p.padding, im_h,
                              im_w);
    empty = !ok || g.x_end <= g.x_begin || g.y_end <= g.y_begin;
    if (empty) return;
    const int64_t width = g.x_end - g.x_begin;
    xtaps.resize(width);
    for (int64_t k = 0; k < width; ++k) {
      xtaps[k] = axis_taps<acc_t>(g.x_begin + k - g.box_x, g.scale_x, p.mask_w + 2 * p.padding);
    }
    src.assign(p.mask_w + 2 * p.padding, acc_t(0));
    rows[0].resize(width);
    rows[1].resize(width);
  }

  // The x-resized padded source row `i`, computed into a free slot if not cached.
  const acc_t* row(const PasteProblem& p, int64_t i, int64_t keep) {
    if (row_id[0] == i) return rows[0].data();
    if (row_id[1] == i) return rows[1].data();
    const int slot = row_id[0] == keep ? 1 : 0;
    acc_t* out = rows[slot].data();
    const int64_t width = g.x_end - g.x_begin;
    const int64_t r = i - p.padding;
    if (r < 0 || r >= p.mask_h) {
      std::fill(out, out + width, acc_t(0));  // a padding row: 0 * w0 + 0 * w1
    } else {
      for (int64_t c = 0; c < p.mask_w; ++c) {
        src[c + p.padding] = static_cast<acc_t>(mask[r * ms1 + c * ms2]);
      }
      for (int64_t k = 0; k < width; ++k) {
        const AxisTaps<acc_t>& t = xtaps[k];
        out[k] = lerp_x(src[t.i0], src[t.i1], t);
      }
    }
    row_id[slot] = i;
    return out;
  }
};

// `zeroed`: the output already holds zeros (fresh anonymous pages), so only the pixels inside
// each mask's rectangle are written and the pages outside every box are never touched.
template <typename scalar_t, typename out_t>
void paste_rows(const PasteProblem& p, const at::Tensor& masks, double threshold, out_t* out,
                bool zeroed) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* mask_data = masks.const_data_ptr<scalar_t>();
  const int64_t ms0 = masks.stride(0), ms1 = masks.stride(1), ms2 = masks.stride(2);
  const acc_t thr = paste_threshold<scalar_t, acc_t>(threshold);
  const int64_t W = p.out_w;
  const int64_t grain = mf_max<int64_t>(1, 16384 / mf_max<int64_t>(W, 1));
  at::parallel_for(0, p.n * p.out_h, grain, [&](int64_t begin, int64_t end) {
    MaskState<scalar_t, acc_t> s;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / p.out_h;
      const int64_t y = r - n * p.out_h;
      out_t* o = out + r * W;
      if (n != s.n) s.load(p, mask_data, ms0, ms1, ms2, n);
      if (s.empty || y < s.g.y_begin || y >= s.g.y_end) {
        if (!zeroed) std::memset(o, 0, W * sizeof(out_t));
        continue;
      }
      const AxisTaps<acc_t> ty =
          axis_taps<acc_t>(y - s.g.box_y, s.g.scale_y, p.mask_h + 2 * p.padding);
      const acc_t* r0 = s.row(p, ty.i0, ty.i1);
      const acc_t* r1 = s.row(p, ty.i1, ty.i0);
      const int64_t x0 = s.g.x_begin, width = s.g.x_end - s.g.x_begin;
      if (!zeroed) std::memset(o, 0, x0 * sizeof(out_t));
      out_t* ob = o + x0;
      for (int64_t k = 0; k < width; ++k) {
        ob[k] = paste_output<scalar_t, out_t>(lerp_y(r0[k], r1[k], ty), thr);
      }
      if (!zeroed) std::memset(ob + width, 0, (W - x0 - width) * sizeof(out_t));
    }
  });
}

// Large outputs come from their own anonymous mapping: the kernel hands them out as zero pages,
// so the paste writes only the pixels inside the boxes (a few percent of a 100 x 800 x 1088
// output) instead of faulting in and zeroing hundreds of MB. Pages outside every box stay
// shared zero pages until someone writes them. Small outputs use the ordinary allocator.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options, bool* zeroed) {
  *zeroed = false;
#if defined(__linux__)
  int64_t numel = 1;
  for (int64_t v : sizes) numel *= v;
  const size_t bytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  constexpr size_t kMinBytes = size_t(16) << 20;
  if (bytes >= kMinBytes) {
    void* ptr = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ptr != MAP_FAILED) {
      *zeroed = true;
      return at::from_blob(
          ptr, sizes, [bytes](void* q) { munmap(q, bytes); }, options);
    }
  }
#endif
  return at::empty(sizes, options);
}

at::Tensor paste_masks_cpu(const at::Tensor& masks, const at::Tensor& boxes,
                           const std::optional<at::Tensor>& image_index,
                           const std::optional<at::Tensor>& image_sizes, int64_t out_height,
                           int64_t out_width, int64_t padding, std::optional<double> threshold) {
  PasteMasksArgs a = check_paste_masks_inputs(masks, boxes, image_index, image_sizes, out_height,
                                              out_width, padding, threshold);
  check_paste_masks_data_cpu(image_index, image_sizes, a.n);
  const auto out_dtype = threshold.has_value() ? at::kByte : masks.scalar_type();
  bool zeroed = false;
  at::Tensor out = empty_output({a.n, out_height, out_width}, masks.options().dtype(out_dtype),
                                &zeroed);
  if (out.numel() == 0) return out;
  // No MADV_HUGEPAGE hint on this (often 100s of MB) output: where THP defrag is "madvise",
  // the hinted first-touch faults compact memory synchronously, and inside the model (memory
  // fragmented by the backbone) the paste took ~5x longer than with plain 4 KiB faults.

  PasteProblem p;
  p.n = a.n;
  p.mask_h = a.mask_h;
  p.mask_w = a.mask_w;
  p.out_h = out_height;
  p.out_w = out_width;
  p.padding = padding;
  p.boxes = boxes.const_data_ptr();
  p.box_type = a.box_type;
  p.box_s0 = boxes.stride(0);
  p.box_s1 = boxes.stride(1);
  p.image_index = image_index ? image_index->const_data_ptr<int64_t>() : nullptr;
  p.index_s0 = image_index ? image_index->stride(0) : 0;
  p.image_sizes = image_sizes ? image_sizes->const_data_ptr<int64_t>() : nullptr;
  p.sizes_s0 = image_sizes ? image_sizes->stride(0) : 0;
  p.sizes_s1 = image_sizes ? image_sizes->stride(1) : 0;
  p.box_scale = static_cast<double>(a.mask_w + 2 * padding) / static_cast<double>(a.mask_w);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, masks.scalar_type(),
                                  "paste_masks_cpu", [&] {
    if (threshold.has_value()) {
      paste_rows<scalar_t, uint8_t>(p, a.masks, *threshold, out.data_ptr<uint8_t>(), zeroed);
    } else {
      paste_rows<scalar_t, scalar_t>(p, a.masks, 0.0, out.data_ptr<scalar_t>(), zeroed);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("paste_masks", TORCH_FN(paste_masks_cpu));
}

}  // namespace maskrcnn_fast
