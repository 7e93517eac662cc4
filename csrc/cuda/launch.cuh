#pragma once
// The one launch layer of csrc/cuda/: every kernel launch, the device guard, the current
// stream and the backend registration go through here, so that the same .cu sources compile
// with nvcc (CUDA) or, with MF_EMU defined, as host C++ through csrc/emu/ (emulated CUDA on
// CPU tensors, torch.ops.maskrcnn_fast_emu).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <utility>

#ifdef MF_EMU
#include "emu/cuda_emu.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace maskrcnn_fast {

#ifdef MF_EMU
using Stream = ::mf_emu::Stream;
// The emulated kernels run on CPU tensors: there is no device to switch to.
struct DeviceGuard {
  explicit DeviceGuard(const c10::Device&) {}
};
inline Stream current_stream() { return {}; }
#define MF_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(maskrcnn_fast_emu, CPU, m)
#else
using Stream = cudaStream_t;
using DeviceGuard = c10::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }
#define MF_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(maskrcnn_fast, CUDA, m)
#endif

// A word that other threads of the block may be changing with atomics at the same time, read
// as a relaxed atomic: a plain load racing with their atomics is a data race in CUDA's memory
// model (a volatile load is a relaxed one in PTX's) and for ThreadSanitizer.
template <typename T>
__device__ __forceinline__ T load_relaxed(const T* p) {
#ifdef MF_EMU
  return __atomic_load_n(p, __ATOMIC_RELAXED);
#else
  return *reinterpret_cast<const volatile T*>(p);
#endif
}

// kernel<<<grid, block, 0, stream>>>(args...) and the launch check. A grid without blocks
// (an empty input) launches nothing: CUDA rejects it, so no caller has to guard it.
template <typename... Params, typename... Args>
inline void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Stream stream,
                   Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
#ifdef MF_EMU
  (void)stream;
  // Each emulated thread calls the kernel, so each gets its own copy of the parameters.
  ::mf_emu::run_grid(reinterpret_cast<const void*>(kernel), grid, block,
                     [&]() { kernel(args...); });
#else
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

}  // namespace maskrcnn_fast
