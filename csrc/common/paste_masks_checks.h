#pragma once
// Input checks of paste_masks, shared by the CPU and CUDA entry points (host only).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "common/checks.h"
#include "common/paste_masks_math.h"

namespace maskrcnn_fast {

// The arguments after validation: masks as a [N, Mh, Mw] view (a [N, 1, Mh, Mw] input loses
// its channel dim), and the dtype code the kernels read the boxes with.
struct PasteMasksArgs {
  at::Tensor masks;
  int64_t n, mask_h, mask_w;
  PasteBoxType box_type;
};

inline PasteBoxType paste_box_type(const at::Tensor& boxes) {
  switch (boxes.scalar_type()) {
    case at::kDouble: return PasteBoxType::Double;
    case at::kHalf: return PasteBoxType::Half;
    case at::kBFloat16: return PasteBoxType::BFloat16;
    default: return PasteBoxType::Float;
  }
}

inline PasteMasksArgs check_paste_masks_inputs(const at::Tensor& masks, const at::Tensor& boxes,
                                               const std::optional<at::Tensor>& image_index,
                                               const std::optional<at::Tensor>& image_sizes,
                                               int64_t out_height, int64_t out_width,
                                               int64_t padding,
                                               std::optional<double> threshold) {
  check_floating(masks, "masks");
  TORCH_CHECK(masks.dim() == 3 || (masks.dim() == 4 && masks.size(1) == 1),
              "masks must be Tensor[N, M, M] or Tensor[N, 1, M, M], got a tensor of shape ",
              masks.sizes());
  PasteMasksArgs a;
  a.masks = masks.dim() == 4 ? masks.select(1, 0) : masks;
  a.n = a.masks.size(0);
  a.mask_h = a.masks.size(1);
  a.mask_w = a.masks.size(2);
  TORCH_CHECK(a.mask_h > 0 && a.mask_w > 0, "masks must have a non-empty M x M plane, got shape ",
              masks.sizes());

  check_floating(boxes, "boxes");
  check_dim(boxes, 2, "boxes", "Tensor[N, 4]");
  check_last_dim(boxes, 4, "boxes", "Tensor[N, 4]");
  TORCH_CHECK(boxes.size(0) == a.n, "boxes must have one row per mask (", a.n,
              "), got a tensor of shape ", boxes.sizes());
  check_same_device(masks, "masks", boxes, "boxes");
  a.box_type = paste_box_type(boxes);

  if (image_index.has_value()) {
    const at::Tensor& idx = *image_index;
    TORCH_CHECK(idx.scalar_type() == at::kLong, "image_index must be an int64 tensor, got ",
                idx.scalar_type());
    check_dim(idx, 1, "image_index", "Tensor[N]");
    TORCH_CHECK(idx.size(0) == a.n, "image_index must have one entry per mask (", a.n,
                "), got a tensor of shape ", idx.sizes());
    check_same_device(masks, "masks", idx, "image_index");
  }
  if (image_sizes.has_value()) {
    const at::Tensor& sizes = *image_sizes;
    TORCH_CHECK(sizes.scalar_type() == at::kLong, "image_sizes must be an int64 tensor, got ",
                sizes.scalar_type());
    check_dim(sizes, 2, "image_sizes", "Tensor[B, 2]");
    check_last_dim(sizes, 2, "image_sizes", "Tensor[B, 2]");
    check_same_device(masks, "masks", sizes, "image_sizes");
  }
  TORCH_CHECK(out_height >= 0 && out_width >= 0,
              "out_height and out_width must be non-negative, got ", out_height, " and ",
              out_width);
  TORCH_CHECK(padding >= 0, "padding must be non-negative, got ", padding);
  // The pixels outside every box are 0 and stay 0 after thresholding only if threshold >= 0.
  TORCH_CHECK(!threshold.has_value() || *threshold >= 0.0,
              "threshold must be a number >= 0 (or None), got ",
              threshold.has_value() ? *threshold : 0.0);
  return a;
}

// Data-dependent checks, CPU only (CUDA guards the same cases in the kernel: such a mask is
// zero). Reads the index tensors, so it must not run on device memory.
inline void check_paste_masks_data_cpu(const std::optional<at::Tensor>& image_index,
                                       const std::optional<at::Tensor>& image_sizes, int64_t n) {
  const int64_t num_images = image_sizes.has_value() ? image_sizes->size(0) : 1;
  if (image_sizes.has_value() && num_images > 0) {
    const at::Tensor sizes = image_sizes->contiguous();
    const int64_t* s = sizes.data_ptr<int64_t>();
    for (int64_t i = 0; i < 2 * num_images; ++i) {
      TORCH_CHECK(s[i] >= 0, "image_sizes must be non-negative, got ", s[i], " for image ",
                  i / 2);
    }
  }
  if (image_index.has_value()) {
    const at::Tensor idx = image_index->contiguous();
    const int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(p[i] >= 0 && p[i] < num_images, "image_index must be in [0, ", num_images,
                  ") (one row of image_sizes per image), got ", p[i], " for mask ", i);
    }
  } else {
    TORCH_CHECK(n == 0 || num_images > 0,
                "image_sizes must have a row for image 0 when image_index is None");
  }
}

}  // namespace maskrcnn_fast
