#pragma once
// Argument checks of packed_mask_targets, called by the CPU and the CUDA entry points so that
// both raise the same messages. Host only.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "common/checks.h"
#include "common/packed_mask_targets_math.h"

namespace maskrcnn_fast {

// data: uint8 or bool [D]; instances: int64 [N, 9]; boxes [K, 4] floating; instance_index int64
// [K]; all on one device.
inline void check_packed_mask_targets_inputs(const at::Tensor& data, const at::Tensor& instances,
                                             const at::Tensor& boxes,
                                             const at::Tensor& instance_index, int64_t size) {
  check_dim(boxes, 2, "boxes", "Tensor[K, 4]");
  check_last_dim(boxes, 4, "boxes", "Tensor[K, 4]");
  check_floating(boxes, "boxes");
  TORCH_CHECK(data.scalar_type() == at::kByte || data.scalar_type() == at::kBool,
              "data must be a uint8 or bool tensor, got ", data.scalar_type());
  check_dim(data, 1, "data", "Tensor[D]");
  check_same_device(boxes, "boxes", data, "data");
  TORCH_CHECK(instances.scalar_type() == at::kLong, "instances must be an int64 tensor, got ",
              instances.scalar_type());
  check_dim(instances, 2, "instances", "Tensor[N, 9]");
  check_last_dim(instances, kInstanceColumns, "instances", "Tensor[N, 9]");
  check_same_device(boxes, "boxes", instances, "instances");
  TORCH_CHECK(instance_index.scalar_type() == at::kLong,
              "instance_index must be an int64 tensor, got ", instance_index.scalar_type());
  check_dim(instance_index, 1, "instance_index", "Tensor[K]");
  TORCH_CHECK(instance_index.size(0) == boxes.size(0),
              "instance_index must have one entry per box (", boxes.size(0),
              "), got a tensor of shape ", instance_index.sizes());
  check_same_device(boxes, "boxes", instance_index, "instance_index");
  TORCH_CHECK(size > 0 && size <= INT32_MAX, "size must be positive (and fit in int32), got ",
              size);
  // Keeps the per-box bin count of the CUDA kernel in int; far beyond any real use.
  TORCH_CHECK(size * size <= (int64_t(1) << 26), "size * size must be at most 2^26, got size ",
              size);
}

// Data-dependent checks, CPU only (the CUDA kernel writes zeros for the same cases instead of
// syncing): every instances row is a readable crop (packed_instance_ok) and every box names a
// row. `rows` and `index` are the contiguous instances and instance_index.
inline void check_packed_mask_targets_data_cpu(const int64_t* rows, int64_t num_rows,
                                               int64_t data_size, const int64_t* index,
                                               int64_t num_boxes) {
  for (int64_t n = 0; n < num_rows; ++n) {
    const int64_t* r = rows + n * kInstanceColumns;
    if (packed_instance_ok(r, data_size)) continue;
    for (int c = kSrcH; c <= kOutW; ++c) {
      TORCH_CHECK(r[c] >= 0 && r[c] <= INT32_MAX, "instances row ", n,
                  ": the frame sizes (H, W, H', W') must be in [0, 2^31), got (", r[kSrcH], ", ",
                  r[kSrcW], ", ", r[kOutH], ", ", r[kOutW], ")");
    }
    TORCH_CHECK(r[kWidth] >= 0 && r[kHeight] >= 0, "instances row ", n,
                ": negative crop size (width, height) = (", r[kWidth], ", ", r[kHeight], ")");
    TORCH_CHECK(r[kX0] >= 0 && r[kY0] >= 0 && r[kWidth] <= r[kSrcW] - r[kX0] &&
                    r[kHeight] <= r[kSrcH] - r[kY0],
                "instances row ", n, ": crop (x0, y0, w, h) = (", r[kX0], ", ", r[kY0], ", ",
                r[kWidth], ", ", r[kHeight], ") outside the ", r[kSrcW], " x ", r[kSrcH],
                " (W x H) source frame");
    TORCH_CHECK(false, "instances row ", n, ": crop bytes [", r[kOffset], ", ", r[kOffset],
                " + ", r[kWidth], " * ", r[kHeight], ") outside data (", data_size, " bytes)");
  }
  for (int64_t k = 0; k < num_boxes; ++k) {
    TORCH_CHECK(index[k] >= 0 && index[k] < num_rows, "instance_index must be in [0, ", num_rows,
                ") (a row of instances), got ", index[k], " for box ", k);
  }
}

}  // namespace maskrcnn_fast
