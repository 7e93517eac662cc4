#pragma once
// One spelling for functions that both the CPU and the CUDA kernels call, so the
// per-element arithmetic exists once and CPU tests check what the GPU computes.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define MF_HOST_DEVICE __host__ __device__ __forceinline__
#define MF_DEVICE __device__ __forceinline__
#else
#define MF_HOST_DEVICE inline
#define MF_DEVICE inline
#endif

#include <cmath>
#include <cstdint>

namespace maskrcnn_fast {

template <typename T>
MF_HOST_DEVICE T mf_max(T a, T b) { return a > b ? a : b; }
template <typename T>
MF_HOST_DEVICE T mf_min(T a, T b) { return a < b ? a : b; }

}  // namespace maskrcnn_fast
