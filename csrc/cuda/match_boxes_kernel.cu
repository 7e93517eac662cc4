// match_boxes on CUDA, without a host synchronisation and without the [N, G, T] IoU matrix.
//
// Pass 1 (low-quality matches only): each block takes one image and a stripe of its boxes; for
// each ground truth (staged in shared memory, kChunk at a time) a warp max-reduces the IoU keys
// of its 32 boxes (common/match_boxes_math.h's order-preserving keys, so NaN wins as in torch.max),
// lane 0 folds it into the block's shared key, and the block folds its keys into the global
// [N, G] keys with atomicMax. Pass 2: one thread per box walks the ground truths in order
// (running max / argmax / "equals some ground truth's best") and writes the decision.
// Counts are clamped to [0, G] and [0, T] on the device, so bad counts never read out of bounds.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "cuda/launch.cuh"

#include "common/match_boxes_checks.h"
#include "common/match_boxes_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 128;

struct MatchDims {
  int64_t N, G, T, box_stride;  // box_stride: T * 4, or 0 when every image shares the boxes
};

__device__ __forceinline__ int64_t clamp_count(const int64_t* counts, int64_t n, int64_t limit,
                                               int64_t fallback) {
  if (counts == nullptr) return fallback;
  const int64_t c = counts[n];
  return c < 0 ? 0 : (c > limit ? limit : c);
}

template <typename K>
__device__ __forceinline__ K warp_max(K v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const K o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = o > v ? o : v;
  }
  return v;
}

template <typename T, typename acc_t>
__global__ void best_per_gt_kernel(const T* __restrict__ gt, const int64_t* __restrict__ gt_counts,
                                   const T* __restrict__ boxes,
                                   const int64_t* __restrict__ box_counts, const MatchDims d,
                                   typename IouKeyOf<acc_t>::type* __restrict__ keys) {
  using K = typename IouKeyOf<acc_t>::type;
  __shared__ IouBox<acc_t> sgt[kChunk];
  __shared__ K skey[kChunk];
  const int lane = threadIdx.x & 31;
  for (int64_t n = blockIdx.y; n < d.N; n += gridDim.y) {
    // Uniform across the block: every loop bound below is, so the barriers are safe.
    const int64_t num_gt = clamp_count(gt_counts, n, d.G, d.G);
    const int64_t count = clamp_count(box_counts, n, d.T, d.T);
    const T* img_boxes = boxes + n * d.box_stride;
    for (int64_t g0 = 0; g0 < num_gt; g0 += kChunk) {
      const int chunk = static_cast<int>(num_gt - g0 < kChunk ? num_gt - g0 : kChunk);
      for (int i = threadIdx.x; i < chunk; i += blockDim.x) {
        sgt[i] = iou_box<T, acc_t>(gt + (n * d.G + g0 + i) * 4);
        skey[i] = K(0);
      }
      __syncthreads();
      for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < count;
           base += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t t = base + threadIdx.x;
        const bool valid = t < count;
        IouBox<acc_t> b{};
        if (valid) b = iou_box<T, acc_t>(img_boxes + t * 4);
        for (int g = 0; g < chunk; ++g) {
          K key = valid ? iou_key<acc_t>(pair_iou<T, acc_t>(sgt[g], b)) : K(0);
          key = warp_max(key);
          if (lane == 0 && key != K(0)) atomicMax(&skey[g], key);
        }
      }
      __syncthreads();
      for (int i = threadIdx.x; i < chunk; i += blockDim.x) {
        if (skey[i] != K(0)) atomicMax(&keys[n * d.G + g0 + i], skey[i]);
      }
      __syncthreads();
    }
  }
}

template <typename T, typename acc_t>
__global__ void match_kernel(const T* __restrict__ gt, const int64_t* __restrict__ gt_counts,
                             const T* __restrict__ boxes, const int64_t* __restrict__ box_counts,
                             const MatchDims d,
                             const typename IouKeyOf<acc_t>::type* __restrict__ keys,
                             acc_t high, acc_t low, int64_t* __restrict__ out) {
  __shared__ IouBox<acc_t> sgt[kChunk];
  __shared__ acc_t sbest[kChunk];
  const bool low_quality = keys != nullptr;
  for (int64_t n = blockIdx.y; n < d.N; n += gridDim.y) {
    const int64_t num_gt = clamp_count(gt_counts, n, d.G, d.G);
    const int64_t count = clamp_count(box_counts, n, d.T, d.T);
    const T* img_boxes = boxes + n * d.box_stride;
    const bool one_chunk = num_gt <= kChunk;
    auto stage = [&](int64_t g0, int chunk) {
      for (int i = threadIdx.x; i < chunk; i += blockDim.x) {
        sgt[i] = iou_box<T, acc_t>(gt + (n * d.G + g0 + i) * 4);
        // Without low-quality matches NaN: it equals no IoU.
        sbest[i] = low_quality ? iou_from_key<acc_t>(keys[n * d.G + g0 + i])
                               : std::numeric_limits<acc_t>::quiet_NaN();
      }
    };
    __syncthreads();  // the previous image's chunk is no longer read
    if (one_chunk) stage(0, static_cast<int>(num_gt));
    __syncthreads();
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < d.T;
         base += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t t = base + threadIdx.x;
      const bool valid = t < count;
      IouBox<acc_t> b{};
      if (valid) b = iou_box<T, acc_t>(img_boxes + t * 4);
      acc_t best = -std::numeric_limits<acc_t>::infinity();
      int64_t arg = 0;
      bool lowq = false;
      for (int64_t g0 = 0; g0 < num_gt; g0 += kChunk) {
        const int chunk = static_cast<int>(num_gt - g0 < kChunk ? num_gt - g0 : kChunk);
        if (!one_chunk) {
          __syncthreads();
          stage(g0, chunk);
          __syncthreads();
        }
        for (int g = 0; g < chunk; ++g) {
          const acc_t v = pair_iou<T, acc_t>(sgt[g], b);
          if (argmax_takes(v, best)) {
            best = v;
            arg = g0 + g;
          }
          lowq = lowq || (v == sbest[g]);
        }
      }
      if (t < d.T) {
        out[n * d.T + t] = (valid && num_gt > 0)
                               ? match_decision(best, arg, high, low, lowq)
                               : kBelowLowThreshold;
      }
    }
  }
}

at::Tensor match_boxes_cuda(const at::Tensor& gt_boxes, const at::Tensor& gt_counts,
                            const at::Tensor& boxes, const c10::optional<at::Tensor>& box_counts,
                            double high_threshold, double low_threshold,
                            bool allow_low_quality_matches) {
  check_match_boxes(gt_boxes, gt_counts, boxes, box_counts, high_threshold, low_threshold);
  DeviceGuard guard(gt_boxes.device());
  const at::Tensor gt = gt_boxes.contiguous();
  const at::Tensor bx = boxes.contiguous();
  const at::Tensor gc = gt_counts.contiguous();
  at::Tensor bc;
  if (box_counts.has_value()) bc = box_counts->contiguous();
  MatchDims d;
  d.N = gt.size(0);
  d.G = gt.size(1);
  d.T = bx.size(-2);
  d.box_stride = bx.dim() == 3 ? d.T * 4 : 0;
  at::Tensor out = at::empty({d.N, d.T}, gt.options().dtype(at::kLong));
  if (d.N == 0 || d.T == 0) return out;
  if (d.G == 0) return out.fill_(kBelowLowThreshold);
  const int64_t* gc_ptr = gc.const_data_ptr<int64_t>();
  const int64_t* bc_ptr = bc.defined() ? bc.const_data_ptr<int64_t>() : nullptr;
  const int64_t bx_blocks = std::min<int64_t>((d.T + kThreads - 1) / kThreads, 2048);
  const dim3 grid(static_cast<unsigned>(bx_blocks),
                  static_cast<unsigned>(std::min<int64_t>(d.N, 65535)));
  auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gt.scalar_type(), "match_boxes", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using K = typename IouKeyOf<acc_t>::type;
    const scalar_t* gt_ptr = gt.const_data_ptr<scalar_t>();
    const scalar_t* bx_ptr = bx.const_data_ptr<scalar_t>();
    at::Tensor keys;
    const K* key_ptr = nullptr;
    if (allow_low_quality_matches) {
      // The key 0 is below every IoU: the max over no box.
      keys = at::zeros({d.N, d.G}, gt.options().dtype(sizeof(K) == 4 ? at::kInt : at::kLong));
      K* k = reinterpret_cast<K*>(keys.mutable_data_ptr());
      launch(best_per_gt_kernel<scalar_t, acc_t>, grid, kThreads, stream, gt_ptr, gc_ptr, bx_ptr,
             bc_ptr, d, k);
      key_ptr = k;
    }
    launch(match_kernel<scalar_t, acc_t>, grid, kThreads, stream, gt_ptr, gc_ptr, bx_ptr, bc_ptr, d,
           key_ptr, static_cast<acc_t>(high_threshold), static_cast<acc_t>(low_threshold),
           out.mutable_data_ptr<int64_t>());
  });
  return out;
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) { m.impl("match_boxes", &match_boxes_cuda); }

}  // namespace maskrcnn_fast
