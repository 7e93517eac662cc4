#pragma once
// Input checks shared by the CPU and CUDA entry points: both raise the same message,
// and every message names the argument it is about.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace maskrcnn_fast {

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name,
              " must be a floating point tensor (float, double, half or bfloat16), got ",
              t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* shape) {
  TORCH_CHECK(t.dim() == dim, name, " must be ", shape, ", got a tensor of shape ", t.sizes());
}

inline void check_last_dim(const at::Tensor& t, int64_t size, const char* name, const char* shape) {
  TORCH_CHECK(t.size(-1) == size, name, " must be ", shape, ", got a tensor of shape ", t.sizes());
}

inline void check_same_device(const at::Tensor& a, const char* name_a, const at::Tensor& b,
                              const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), name_a, " and ", name_b,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

inline void check_same_dtype(const at::Tensor& a, const char* name_a, const at::Tensor& b,
                             const char* name_b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), name_a, " and ", name_b,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

}  // namespace maskrcnn_fast
