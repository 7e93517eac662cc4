// paste_masks on CUDA: one launch for all masks of all images, no host sync.
//
// One block per output row (grid-stride over the N * out_height rows of all masks). Every
// thread derives the row's mask geometry (uniform loads of one box, one image index and one
// image size), so a row outside its mask's pasted rectangle is a run of coalesced zero stores;
// inside, each pixel samples the small mask through the shared math of
// common/paste_masks_math.h. Invalid data (NaN boxes, an image index out of range) pastes an
// all-zero mask instead of reading out of bounds.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cuda/launch.cuh"

#include "common/paste_masks_checks.h"
#include "common/paste_masks_math.h"

namespace maskrcnn_fast {
namespace {

struct PasteParams {
  int64_t n, mask_h, mask_w, out_h, out_w, padding;
  int64_t ms0, ms1, ms2;
  const void* boxes;
  PasteBoxType box_type;
  int64_t box_s0, box_s1;
  const int64_t* image_index;  // nullptr: every mask is in image 0
  int64_t index_s0;
  const int64_t* image_sizes;  // nullptr: every image is out_h x out_w
  int64_t sizes_s0, sizes_s1, num_images;
  double box_scale;
};

template <typename scalar_t, typename out_t>
__global__ void paste_masks_kernel(PasteParams p, const scalar_t* __restrict__ masks,
                                   double threshold, out_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t thr = paste_threshold<scalar_t, acc_t>(threshold);
  const int64_t padded_h = p.mask_h + 2 * p.padding;
  const int64_t padded_w = p.mask_w + 2 * p.padding;
  const int64_t rows = p.n * p.out_h;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t n = r / p.out_h;
    const int64_t y = r - n * p.out_h;
    out_t* o = out + r * p.out_w;

    int64_t box[4];
    bool ok = load_expanded_box(p.boxes, p.box_type, n * p.box_s0, p.box_s1, p.box_scale, box);
    const int64_t img = p.image_index ? p.image_index[n * p.index_s0] : 0;
    ok = ok && img >= 0 && img < p.num_images;
    int64_t im_h = p.out_h, im_w = p.out_w;
    if (ok && p.image_sizes) {
      im_h = mf_min(p.image_sizes[img * p.sizes_s0], p.out_h);
      im_w = mf_min(p.image_sizes[img * p.sizes_s0 + p.sizes_s1], p.out_w);
    }
    const PasteGeometry<acc_t> g = paste_geometry<acc_t>(box, padded_h, padded_w, im_h, im_w);
    if (!ok || y < g.y_begin || y >= g.y_end) {
      for (int64_t x = threadIdx.x; x < p.out_w; x += blockDim.x) o[x] = out_t(0);
      continue;
    }
    const AxisTaps<acc_t> ty = axis_taps<acc_t>(y - g.box_y, g.scale_y, padded_h);
    // The two source rows of the unpadded mask (or padding: nullptr, all zeros).
    const int64_t s0 = ty.i0 - p.padding, s1 = ty.i1 - p.padding;
    const scalar_t* row0 = (s0 >= 0 && s0 < p.mask_h) ? masks + n * p.ms0 + s0 * p.ms1 : nullptr;
    const scalar_t* row1 = (s1 >= 0 && s1 < p.mask_h) ? masks + n * p.ms0 + s1 * p.ms1 : nullptr;
    for (int64_t x = threadIdx.x; x < p.out_w; x += blockDim.x) {
      if (x < g.x_begin || x >= g.x_end) {
        o[x] = out_t(0);
        continue;
      }
      const AxisTaps<acc_t> tx = axis_taps<acc_t>(x - g.box_x, g.scale_x, padded_w);
      const int64_t c0 = tx.i0 - p.padding, c1 = tx.i1 - p.padding;
      const bool in0 = c0 >= 0 && c0 < p.mask_w, in1 = c1 >= 0 && c1 < p.mask_w;
      acc_t t0 = acc_t(0), t1 = acc_t(0);
      if (row0) {
        const acc_t v0 = in0 ? static_cast<acc_t>(row0[c0 * p.ms2]) : acc_t(0);
        const acc_t v1 = in1 ? static_cast<acc_t>(row0[c1 * p.ms2]) : acc_t(0);
        t0 = lerp_x(v0, v1, tx);
      }
      if (row1) {
        const acc_t v0 = in0 ? static_cast<acc_t>(row1[c0 * p.ms2]) : acc_t(0);
        const acc_t v1 = in1 ? static_cast<acc_t>(row1[c1 * p.ms2]) : acc_t(0);
        t1 = lerp_x(v0, v1, tx);
      }
      o[x] = paste_output<scalar_t, out_t>(lerp_y(t0, t1, ty), thr);
    }
  }
}

at::Tensor paste_masks_cuda(const at::Tensor& masks, const at::Tensor& boxes,
                            const std::optional<at::Tensor>& image_index,
                            const std::optional<at::Tensor>& image_sizes, int64_t out_height,
                            int64_t out_width, int64_t padding, std::optional<double> threshold) {
  PasteMasksArgs a = check_paste_masks_inputs(masks, boxes, image_index, image_sizes, out_height,
                                              out_width, padding, threshold);
  DeviceGuard guard(masks.device());
  const auto out_dtype = threshold.has_value() ? at::kByte : masks.scalar_type();
  at::Tensor out = at::empty({a.n, out_height, out_width}, masks.options().dtype(out_dtype));
  if (out.numel() == 0) return out;

  PasteParams p;
  p.n = a.n;
  p.mask_h = a.mask_h;
  p.mask_w = a.mask_w;
  p.out_h = out_height;
  p.out_w = out_width;
  p.padding = padding;
  p.ms0 = a.masks.stride(0);
  p.ms1 = a.masks.stride(1);
  p.ms2 = a.masks.stride(2);
  p.boxes = boxes.const_data_ptr();
  p.box_type = a.box_type;
  p.box_s0 = boxes.stride(0);
  p.box_s1 = boxes.stride(1);
  p.image_index = image_index ? image_index->const_data_ptr<int64_t>() : nullptr;
  p.index_s0 = image_index ? image_index->stride(0) : 0;
  p.image_sizes = image_sizes ? image_sizes->const_data_ptr<int64_t>() : nullptr;
  p.sizes_s0 = image_sizes ? image_sizes->stride(0) : 0;
  p.sizes_s1 = image_sizes ? image_sizes->stride(1) : 0;
  p.num_images = image_sizes ? image_sizes->size(0) : 1;
  p.box_scale = static_cast<double>(a.mask_w + 2 * padding) / static_cast<double>(a.mask_w);

  // A block per row, its width rounded up to whole warps (at most 256 threads).
  const int threads = static_cast<int>(mf_min<int64_t>(256, (out_width + 31) / 32 * 32));
  const int64_t rows = a.n * out_height;
  const unsigned int blocks = static_cast<unsigned int>(mf_min<int64_t>(rows, int64_t(1) << 20));
  auto stream = current_stream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, masks.scalar_type(),
                                  "paste_masks_cuda", [&] {
    if (threshold.has_value()) {
      launch(paste_masks_kernel<scalar_t, uint8_t>, blocks, threads, stream, p,
             a.masks.const_data_ptr<scalar_t>(), *threshold, out.data_ptr<uint8_t>());
    } else {
      launch(paste_masks_kernel<scalar_t, scalar_t>, blocks, threads, stream, p,
             a.masks.const_data_ptr<scalar_t>(), 0.0, out.data_ptr<scalar_t>());
    }
  });
  return out;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("paste_masks", TORCH_FN(paste_masks_cuda));
}

}  // namespace maskrcnn_fast
