// Planted defects for tests/test_emulation.py: tiny kernels, each with one class of bug the
// emulation (or its sanitizer build) must report, and a correct twin. Built only into _C_emu
// (setup.py compiles csrc/cuda for nvcc, never this folder).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "cuda/launch.cuh"

namespace maskrcnn_fast {
namespace {

constexpr int kBound = 64;

// Every thread writes its own slot; with `overflow` thread 0 also writes one past the end.
__global__ void write_kernel(float* out, int n, bool overflow) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<float>(i);
  if (overflow && i == 0) out[n] = -1.0f;
}

// Thread t reads what thread t + 1 wrote to shared memory: with `sync` after a barrier, without
// it a race.
__global__ void shared_kernel(float* out, bool sync) {
  __shared__ float buf[256];
  buf[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (sync) __syncthreads();
  out[threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}

// A barrier that only the first half of the block reaches (or, correctly, all of it).
__global__ void branch_barrier_kernel(float* out, bool divergent) {
  if (!divergent || threadIdx.x < blockDim.x / 2) {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// Declares at most kBound threads per block.
__global__ void __launch_bounds__(kBound) bounded_kernel(float* out) {
  out[threadIdx.x] = 2.0f;
}

// A ballot over the full warp called by lanes 0..15 only (or by all 32).
__global__ void ballot_kernel(float* out, bool partial) {
  unsigned r = 0;
  if (!partial || threadIdx.x < 16) r = __ballot_sync(0xffffffffu, threadIdx.x % 2);
  out[threadIdx.x] = static_cast<float>(r != 0);
}

// A ballot whose mask leaves out the calling lane.
__global__ void outside_mask_kernel(float* out, bool outside) {
  const unsigned mask = outside ? 0xfffffffeu : 0xffffffffu;
  out[threadIdx.x] = static_cast<float>(__ballot_sync(mask, 1) != 0);
}

// `<<<grid, block>>>` exactly as written: no empty-grid guard (the launch layer has one).
template <typename... Params, typename... Args>
void raw_launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
  ::mf_emu::run_grid(reinterpret_cast<const void*>(kernel), grid, block,
                     [&]() { kernel(args...); });
}

at::Tensor emu_selftest(const std::string& defect) {
  at::Tensor out = at::zeros({2048}, at::kFloat);
  float* o = out.data_ptr<float>();
  if (defect == "none" || defect == "out_of_bounds") {
    // Its own allocation of exactly n floats, so that the sanitizer sees the end of it.
    const int n = 96;
    float* buf = new float[n];
    raw_launch(write_kernel, dim3(2), dim3(64), buf, n, defect == "out_of_bounds");
    std::copy(buf, buf + n, o);
    delete[] buf;
  } else if (defect == "shared_race" || defect == "shared_synced") {
    raw_launch(shared_kernel, dim3(4), dim3(256), o, defect == "shared_synced");
  } else if (defect == "divergent_barrier" || defect == "uniform_barrier") {
    raw_launch(branch_barrier_kernel, dim3(2), dim3(128), o, defect == "divergent_barrier");
  } else if (defect == "over_launch_bounds" || defect == "within_launch_bounds") {
    raw_launch(bounded_kernel, dim3(1), dim3(defect == "over_launch_bounds" ? 2 * kBound : kBound), o);
  } else if (defect == "partial_ballot" || defect == "full_ballot") {
    raw_launch(ballot_kernel, dim3(1), dim3(64), o, defect == "partial_ballot");
  } else if (defect == "lane_outside_mask") {
    raw_launch(outside_mask_kernel, dim3(1), dim3(32), o, true);
  } else if (defect == "empty_grid") {
    raw_launch(write_kernel, dim3(0), dim3(64), o, 64, false);
  } else if (defect == "empty_grid_through_launch") {
    launch(write_kernel, dim3(0), dim3(64), current_stream(), o, 64, false);
  } else if (defect == "grid_too_large") {
    raw_launch(write_kernel, dim3(1, 65536), dim3(64), o, 64, false);
  } else if (defect == "block_too_large") {
    raw_launch(write_kernel, dim3(1), dim3(2048), o, 64, false);
  } else {
    TORCH_CHECK(false, "defect: unknown planted defect '", defect, "'");
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(maskrcnn_fast_emu, m) {
  m.def("_emu_selftest(str defect) -> Tensor", &emu_selftest);
}

}  // namespace maskrcnn_fast
