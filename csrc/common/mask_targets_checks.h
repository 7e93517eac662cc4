#pragma once
// Argument checks of mask_targets, called by the CPU and the CUDA entry points so that both
// raise the same messages. Host only.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

#include "common/checks.h"
#include "common/mask_targets_math.h"

namespace maskrcnn_fast {

// masks[i]: [G_i, H_i, W_i] uint8 or bool; boxes [K, 4] floating; image_index and
// matched_index [K] int64; all on one device. Returns each image's planes (pointers and
// strides of the tensors as given: no copy).
inline std::vector<MaskPlanes> check_mask_targets_inputs(const at::TensorList masks,
                                                         const at::Tensor& boxes,
                                                         const at::Tensor& image_index,
                                                         const at::Tensor& matched_index,
                                                         int64_t size) {
  check_dim(boxes, 2, "boxes", "Tensor[K, 4]");
  check_last_dim(boxes, 4, "boxes", "Tensor[K, 4]");
  check_floating(boxes, "boxes");
  const int64_t k = boxes.size(0);
  auto check_index = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be an int64 tensor, got ",
                t.scalar_type());
    check_dim(t, 1, name, "Tensor[K]");
    TORCH_CHECK(t.size(0) == k, name, " must have one entry per box (", k,
                "), got a tensor of shape ", t.sizes());
    check_same_device(boxes, "boxes", t, name);
  };
  check_index(image_index, "image_index");
  check_index(matched_index, "matched_index");
  TORCH_CHECK(size > 0 && size <= INT32_MAX, "size must be positive (and fit in int32), got ",
              size);
  // Keeps the per-proposal bin count of the CUDA kernel in int; far beyond any real use.
  TORCH_CHECK(size * size <= (int64_t(1) << 26), "size * size must be at most 2^26, got size ",
              size);
  std::vector<MaskPlanes> planes;
  planes.reserve(masks.size());
  for (size_t i = 0; i < masks.size(); ++i) {
    const at::Tensor& m = masks[i];
    TORCH_CHECK(m.dim() == 3, "masks[", i, "] must be Tensor[G, H, W], got a tensor of shape ",
                m.sizes());
    TORCH_CHECK(m.scalar_type() == at::kByte || m.scalar_type() == at::kBool, "masks[", i,
                "] must be a uint8 or bool tensor, got ", m.scalar_type());
    TORCH_CHECK(m.device() == boxes.device(), "masks[", i,
                "] and boxes must be on the same device, got ", m.device(), " and ",
                boxes.device());
    TORCH_CHECK(m.size(1) <= INT32_MAX && m.size(2) <= INT32_MAX, "masks[", i,
                "] height and width must fit in int32, got ", m.sizes());
    MaskPlanes p;
    // An empty plane (H or W = 0) is never read: its targets are 0, as roi_align's are. It
    // may have no storage, so the kernels test data for null rather than do arithmetic on it.
    p.data = m.numel() > 0 ? static_cast<const uint8_t*>(m.const_data_ptr()) : nullptr;
    p.count = m.size(0);
    p.height = static_cast<int>(m.size(1));
    p.width = static_cast<int>(m.size(2));
    p.stride_g = m.stride(0);
    p.stride_y = m.stride(1);
    p.stride_x = m.stride(2);
    planes.push_back(p);
  }
  return planes;
}

// Data-dependent checks, CPU only (the CUDA kernel writes zeros for the same cases instead
// of syncing): every proposal names an existing image and a mask of that image.
inline void check_mask_targets_indices_cpu(const std::vector<MaskPlanes>& planes,
                                           const at::Tensor& image_index,
                                           const at::Tensor& matched_index) {
  const at::Tensor img = image_index.contiguous();
  const at::Tensor gt = matched_index.contiguous();
  const int64_t* pi = img.const_data_ptr<int64_t>();
  const int64_t* pg = gt.const_data_ptr<int64_t>();
  const int64_t num_images = static_cast<int64_t>(planes.size());
  for (int64_t k = 0; k < img.numel(); ++k) {
    TORCH_CHECK(pi[k] >= 0 && pi[k] < num_images, "image_index must be in [0, ", num_images,
                ") (one entry of masks per image), got ", pi[k], " for box ", k);
    const int64_t g = planes[pi[k]].count;
    TORCH_CHECK(pg[k] >= 0 && pg[k] < g, "matched_index must be in [0, ", g,
                ") (the masks of image ", pi[k], "), got ", pg[k], " for box ", k);
  }
}

}  // namespace maskrcnn_fast
