#pragma once
// Emulated CUDA: the vocabulary of csrc/cuda/ (qualifiers, dim3 and the thread coordinates,
// __syncthreads, warp intrinsics, atomics) for a host C++ compiler, so that the unchanged
// kernel sources build into maskrcnn_fast._C_emu and run on the CPU. A block's threads are
// real OS threads with real barriers (csrc/emu/runtime.cpp), so ASan/UBSan/TSan see the
// kernels' memory accesses and races; CUDA's launch and synchronisation rules are errors that
// name the kernel. It proves indexing, synchronisation, warp logic, atomics, launch
// configurations and guards; not nvcc's code generation, libdevice math, ATen's CUDA ops or speed.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __grid_constant__
// The bound is read from the source at build time (setup.py registers it beside each file).
#define __launch_bounds__(...)
// Per-block storage: one static instance per kernel, owned by one block at a time (see
// claim_shared), so blocks that run at once never share it.
#define __shared__ ::mf_emu::claim_shared(); static

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

namespace mf_emu {

struct Block;

// What a CUDA thread can ask about itself.
struct ThreadCtx {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  int linear;  // threadIdx in the block, x fastest
  Block* block;
};

ThreadCtx& ctx();
void syncthreads(const char* file, int line);
// Every lane of `mask` passes `value`; each gets all 32 values back (lanes outside: 0).
void warp_exchange(unsigned mask, uint64_t value, uint64_t out[32], const char* what);
void claim_shared();

// Runs `body` as every thread of a grid of blocks. `kernel` names the kernel in errors (its
// symbol is looked up) and finds its __launch_bounds__.
void run_grid(const void* kernel, dim3 grid, dim3 block, const std::function<void()>& body);

// setup.py's per-file registration of the __launch_bounds__ it read in the source.
struct LaunchBounds {
  LaunchBounds(const char* kernel, long long max_threads);
};
constexpr long long max_threads_of(long long max_threads, long long = 0, long long = 0) {
  return max_threads;
}

struct Stream {};

template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "warp intrinsics take values of at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace mf_emu

#define threadIdx (::mf_emu::ctx().thread_idx)
#define blockIdx (::mf_emu::ctx().block_idx)
#define blockDim (::mf_emu::ctx().block_dim)
#define gridDim (::mf_emu::ctx().grid_dim)
#define warpSize 32
#define __syncthreads() ::mf_emu::syncthreads(__FILE__, __LINE__)

inline unsigned int __ballot_sync(unsigned mask, int predicate) {
  uint64_t v[32];
  mf_emu::warp_exchange(mask, predicate ? 1 : 0, v, "__ballot_sync");
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= static_cast<unsigned>(v[i] & 1) << i;
  return r & mask;
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  uint64_t v[32];
  mf_emu::warp_exchange(mask, mf_emu::to_bits(var), v, "__shfl_xor_sync");
  const int lane = mf_emu::ctx().linear % 32;
  int src = lane ^ lane_mask;
  // Lanes beyond the segment of `width` read their own value, as on the device.
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return mf_emu::from_bits<T>(v[src]);
}

inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}

// Device min/max: CUDA overloads them for the integer types (the host has std:: templates).
#define MF_EMU_MINMAX(T)                                  \
  inline T min(T a, T b) { return a < b ? a : b; }        \
  inline T max(T a, T b) { return a > b ? a : b; }
MF_EMU_MINMAX(int)
MF_EMU_MINMAX(unsigned int)
MF_EMU_MINMAX(long)
MF_EMU_MINMAX(unsigned long)
MF_EMU_MINMAX(long long)
MF_EMU_MINMAX(unsigned long long)
#undef MF_EMU_MINMAX

// Atomics: sequentially consistent builtins that the sanitizers understand.
template <typename T>
inline T atomicAdd(T* address, T val) {
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(address, val, __ATOMIC_SEQ_CST);
  } else {
    // Floating point: a compare-and-swap loop on the bits, as the device does for doubles
    // on old GPUs; the rounding order follows the threads' interleaving.
    T old;
    __atomic_load(address, &old, __ATOMIC_SEQ_CST);
    T desired;
    do {
      desired = old + val;
    } while (!__atomic_compare_exchange(address, &old, &desired, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST));
    return old;
  }
}

template <typename T>
inline T atomicMax(T* address, T val) {
  static_assert(std::is_integral_v<T>, "atomicMax: integer types only");
  T old = __atomic_load_n(address, __ATOMIC_SEQ_CST);
  while (old < val &&
         !__atomic_compare_exchange_n(address, &old, val, false, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST)) {
  }
  return old;
}

template <typename T>
inline T atomicMin(T* address, T val) {
  static_assert(std::is_integral_v<T>, "atomicMin: integer types only");
  T old = __atomic_load_n(address, __ATOMIC_SEQ_CST);
  while (old > val &&
         !__atomic_compare_exchange_n(address, &old, val, false, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST)) {
  }
  return old;
}

template <typename T>
inline T atomicOr(T* address, T val) {
  static_assert(std::is_integral_v<T>, "atomicOr: integer types only");
  return __atomic_fetch_or(address, val, __ATOMIC_SEQ_CST);
}

template <typename T>
inline T atomicAnd(T* address, T val) {
  static_assert(std::is_integral_v<T>, "atomicAnd: integer types only");
  return __atomic_fetch_and(address, val, __ATOMIC_SEQ_CST);
}
