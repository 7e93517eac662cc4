#pragma once
// The CUDA NMS machinery shared by nms / batched_nms and the fused ops (rpn_proposals,
// detection_postprocess): segmented greedy NMS with a tiled bitmask and an on-device scan per
// segment, no host synchronisation (see segmented_keep).
//
// One segmented algorithm (nms is the one-segment case):
// 1. Sort: by descending score (stable), and for batched_nms then stably by category, so each
//    category is a contiguous segment of the sorted order; the boxes are copied in that order
//    in the compute type, with their areas.
// 2. Segments and 64-box tiles (batched only): each sorted box finds its segment by binary
//    search in the sorted categories; a scan numbers the tiles (aligned to segment starts) and
//    the segments. Counts stay on the device: grids stride over upper bounds.
// 3. Mask (all SMs): bit c of word w of row p says box p and box c of tile t(p) + w of the same
//    segment suppress each other. Only `band` words per row: bits never cross segments and the
//    mask is never O(N^2) over the whole input (nms: the full row up to a memory budget).
//    Word 0 holds the full 64x64 matrix of the row's own tile (the test is symmetric).
// 4. Scan (one block per segment, segments in parallel): per tile, warp 0 resolves the greedy
//    order inside the tile by a fixed-point iteration on ballots (bits of earlier kept boxes),
//    then the kept rows OR their mask words into the segment's removed bits; tiles beyond the
//    band are tested directly against the tile's kept boxes.
// 5. Output: keep flags in the sorted order (nms / batched_nms then masked_select them; the
//    fused ops keep them on the device). Boxes of a negative category belong to no segment:
//    they are never tested and never kept (the fused ops park their filtered-out boxes there).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <limits>

#include "cuda/launch.cuh"

#include "common/nms_checks.h"
#include "common/nms_math.h"

namespace maskrcnn_fast {
namespace {

using u64 = unsigned long long;

constexpr int kTile = kNmsTile;
constexpr int kScanThreads = 256;
constexpr int kThreads = 256;
// Removed-bit words of one segment held in shared memory (16 KB: segments up to 131072 boxes);
// larger segments keep them in global memory.
constexpr int kSmemWords = 2048;
// Mask words per row for batched_nms (categories up to 4096 boxes need no direct tests), and
// the memory nms may spend on its mask before it tests far boxes directly.
constexpr int64_t kBatchedBand = 64;
constexpr int64_t kMaskBudgetBytes = int64_t(256) << 20;
constexpr int kMaskWordsPerBlock = 8;  // grid.y of the mask kernel

template <typename T>
struct SortedBox {
  T x1, y1, x2, y2, area;
};

template <typename T>
__device__ __forceinline__ bool box_suppresses(const SortedBox<T>& a, const SortedBox<T>& b,
                                               T thr) {
  return nms_suppresses(a.x1, a.y1, a.x2, a.y2, a.area, b.x1, b.y1, b.x2, b.y2, b.area, thr);
}

// Where the segments and tiles are: device arrays for batched_nms, or nullptr for one segment
// [0, n) with tiles at multiples of 64 (nms).
struct Segments {
  int32_t n;
  const int32_t* seg_lo;      // [n] start of the segment of each sorted box
  const int32_t* seg_hi;      // [n] its end
  const int32_t* tile_start;  // [<= n] first box of the k-th tile
  const int32_t* seg_start;   // [<= n] first box of the k-th segment
  const int32_t* counts;      // [2] number of tiles, number of segments
  __device__ int32_t lo(int32_t p) const { return seg_lo ? seg_lo[p] : 0; }
  __device__ int32_t hi(int32_t p) const { return seg_hi ? seg_hi[p] : n; }
  __device__ int32_t num_tiles() const { return counts ? counts[0] : (n + kTile - 1) / kTile; }
  __device__ int32_t num_segments() const { return counts ? counts[1] : 1; }
  __device__ int32_t tile(int32_t k) const { return tile_start ? tile_start[k] : k * kTile; }
  __device__ int32_t segment(int32_t k) const { return seg_start ? seg_start[k] : 0; }
};

template <typename scalar_t, typename T>
__global__ void gather_boxes_kernel(const scalar_t* __restrict__ boxes,
                                    const int64_t* __restrict__ order, int32_t n,
                                    SortedBox<T>* __restrict__ out) {
  for (int32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) {
    const scalar_t* b = boxes + 4 * order[p];
    SortedBox<T> s;
    s.x1 = static_cast<T>(b[0]);
    s.y1 = static_cast<T>(b[1]);
    s.x2 = static_cast<T>(b[2]);
    s.y2 = static_cast<T>(b[3]);
    s.area = nms_box_area(s.x1, s.y1, s.x2, s.y2);
    out[p] = s;
  }
}

// Segment bounds of every sorted box (binary search in the sorted categories), and flags:
// flags[p] = p starts a tile, flags[n + p] = p starts a segment; boxes of negative categories
// start neither, so no tile or segment covers them.
__global__ void segment_bounds_kernel(const int64_t* __restrict__ cat, int32_t n,
                                      int32_t* __restrict__ seg_lo, int32_t* __restrict__ seg_hi,
                                      int32_t* __restrict__ flags) {
  for (int32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) {
    const int64_t v = cat[p];
    int32_t a = 0, b = p;  // first index in [0, p] with cat == v
    while (a < b) {
      const int32_t m = a + (b - a) / 2;
      if (cat[m] < v) a = m + 1; else b = m;
    }
    const int32_t lo = a;
    a = p + 1;
    b = n;  // first index in [p + 1, n) with cat > v
    while (a < b) {
      const int32_t m = a + (b - a) / 2;
      if (cat[m] <= v) a = m + 1; else b = m;
    }
    seg_lo[p] = lo;
    seg_hi[p] = a;
    flags[p] = v >= 0 && (p - lo) % kTile == 0;
    flags[n + p] = v >= 0 && p == lo;
  }
}

// From the inclusive scans of the flags: the lists of tile and segment starts, and their counts.
__global__ void segment_lists_kernel(const int32_t* __restrict__ flags,
                                     const int32_t* __restrict__ ids, int32_t n,
                                     int32_t* __restrict__ tile_start,
                                     int32_t* __restrict__ seg_start,
                                     int32_t* __restrict__ counts) {
  for (int32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) {
    if (flags[p]) tile_start[ids[p] - 1] = p;
    if (flags[n + p]) seg_start[ids[n + p] - 1] = p;
    if (p == n - 1) {
      counts[0] = ids[p];
      counts[1] = ids[n + p];
    }
  }
}

// Block (k, y), 64 threads: rows of tile k against the column tiles y, y + gridDim.y, ... of
// its band. Grids stride over tiles because their number is only known on the device.
template <typename T>
__global__ void __launch_bounds__(kTile) mask_kernel(const SortedBox<T>* __restrict__ boxes,
                                                     Segments segs, int64_t band, T thr,
                                                     u64* __restrict__ mask) {
  __shared__ SortedBox<T> cols[kTile];
  const int32_t num_tiles = segs.num_tiles();
  for (int32_t k = blockIdx.x; k < num_tiles; k += gridDim.x) {
    const int32_t row0 = segs.tile(k);
    const int32_t lo = segs.lo(row0), hi = segs.hi(row0);
    const int32_t t = (row0 - lo) / kTile;
    const int32_t tiles = (hi - lo + kTile - 1) / kTile;
    const int32_t rows = min(kTile, hi - row0);
    const int32_t p = row0 + threadIdx.x;
    SortedBox<T> row;
    if (threadIdx.x < rows) row = boxes[p];
    const int64_t words = mf_min<int64_t>(band, tiles - t);
    for (int64_t w = blockIdx.y; w < words; w += gridDim.y) {
      const int32_t c0 = row0 + static_cast<int32_t>(w) * kTile;
      const int32_t ncols = min(kTile, hi - c0);
      __syncthreads();
      if (threadIdx.x < ncols) cols[threadIdx.x] = boxes[c0 + threadIdx.x];
      __syncthreads();
      if (threadIdx.x < rows) {
        u64 bits = 0;
        for (int c = 0; c < ncols; ++c) {
          if (box_suppresses(row, cols[c], thr)) bits |= u64(1) << c;
        }
        if (w == 0) bits &= ~(u64(1) << threadIdx.x);
        mask[static_cast<int64_t>(p) * band + w] = bits;
      }
    }
    __syncthreads();
  }
}

// One block per segment (striding over segments): the greedy scan, tile by tile.
template <typename T>
__global__ void __launch_bounds__(kScanThreads)
    scan_kernel(const SortedBox<T>* __restrict__ boxes, Segments segs,
                const u64* __restrict__ mask, int64_t band, T thr,
                u64* __restrict__ removed_global, uint8_t* __restrict__ keep) {
  __shared__ u64 removed_smem[kSmemWords];
  __shared__ SortedBox<T> kept_boxes[kTile];
  __shared__ u64 kept_bits;
  const int tid = threadIdx.x, lane = tid % 32;
  const int32_t nseg = segs.num_segments();
  for (int32_t k = blockIdx.x; k < nseg; k += gridDim.x) {
    const int32_t lo = segs.segment(k), hi = segs.hi(lo);
    const int32_t tiles = (hi - lo + kTile - 1) / kTile;
    // Segment k's words in global memory start at lo / 64 + k: disjoint across segments.
    u64* removed = tiles <= kSmemWords ? removed_smem : removed_global + (lo / kTile + k);
    for (int32_t i = tid; i < tiles; i += blockDim.x) removed[i] = 0;
    __syncthreads();
    for (int32_t t = 0; t < tiles; ++t) {
      const int32_t row0 = lo + t * kTile;
      const int rows = min(kTile, hi - row0);
      if (tid < 32) {
        // Box b of the tile is kept iff it is a candidate and no kept box a < b of the tile
        // suppresses it. Iterating keep <- candidates minus those hit by keep settles on that
        // (triangular) solution: after i rounds the first i bits are final.
        const u64 valid = rows == kTile ? ~u64(0) : (u64(1) << rows) - 1;
        const u64 cand = ~removed[t] & valid;
        const int b0 = lane, b1 = lane + 32;
        const u64 d0 = b0 < rows ? mask[static_cast<int64_t>(row0 + b0) * band] : 0;
        const u64 d1 = b1 < rows ? mask[static_cast<int64_t>(row0 + b1) * band] : 0;
        const u64 earlier0 = d0 & ((u64(1) << b0) - 1);
        const u64 earlier1 = d1 & ((u64(1) << b1) - 1);
        const bool c0 = (cand >> b0) & 1, c1 = (cand >> b1) & 1;
        u64 kept = cand;
        for (int it = 0; it <= kTile; ++it) {
          const unsigned k0 = __ballot_sync(0xffffffffu, c0 && !(earlier0 & kept));
          const unsigned k1 = __ballot_sync(0xffffffffu, c1 && !(earlier1 & kept));
          const u64 next = u64(k0) | (u64(k1) << 32);
          if (next == kept) break;
          kept = next;
        }
        if (tid == 0) kept_bits = kept;
      }
      __syncthreads();
      const u64 kept = kept_bits;
      const bool far = tiles - t > band;
      if (tid < rows && ((kept >> tid) & 1)) {
        keep[row0 + tid] = 1;
        if (far) kept_boxes[tid] = boxes[row0 + tid];
      }
      // Tiles t + 1 .. t + band - 1 from the mask: one word per thread, no atomics.
      const int64_t words = mf_min<int64_t>(band, tiles - t);
      for (int64_t w = 1 + tid; w < words; w += blockDim.x) {
        u64 acc = 0;
        for (u64 kk = kept; kk; kk &= kk - 1) {
          const int b = __ffsll(static_cast<long long>(kk)) - 1;
          acc |= mask[static_cast<int64_t>(row0 + b) * band + w];
        }
        removed[t + w] |= acc;
      }
      if (far) {
        __syncthreads();  // kept_boxes
        const int32_t first = row0 + static_cast<int32_t>(band) * kTile;
        for (int32_t j = first + tid; j < hi; j += blockDim.x) {
          const int32_t lj = j - lo;
          u64* word = removed + lj / kTile;
          const u64 bit = u64(1) << (lj % kTile);
          if (load_relaxed(word) & bit) continue;  // others atomicOr into the same word
          const SortedBox<T> box = boxes[j];
          for (u64 kk = kept; kk; kk &= kk - 1) {
            const int b = __ffsll(static_cast<long long>(kk)) - 1;
            if (box_suppresses(kept_boxes[b], box, thr)) {
              atomicOr(word, bit);
              break;
            }
          }
        }
      }
      __syncthreads();
    }
  }
}

// Scores with every NaN replaced by the positive quiet NaN: descending sorts put it first, as the
// CPU kernels rank NaN, whatever sign bit the NaN had (0/0 on x86 sets it; a radix sort on the
// GPU orders by bits and would put such a NaN last).
inline at::Tensor canonical_nan(const at::Tensor& scores) {
  if (!scores.is_floating_point()) return scores;
  return at::where(scores.isnan(),
                   at::scalar_tensor(std::numeric_limits<double>::quiet_NaN(), scores.options()),
                   scores);
}

int grid_for(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 4096));
}

// Kept flags (uint8), in the order of `order`, of the segmented greedy NMS of boxes[order];
// `cat` is the sorted category of each box (undefined: one segment; negative: excluded).
// Categories of up to max_band * 64 boxes are resolved from the mask alone; the mask takes
// 8 * max_band bytes per box.
at::Tensor segmented_keep(const at::Tensor& boxes, const at::Tensor& order, const at::Tensor& cat,
                          double iou_threshold, int64_t max_band = kBatchedBand) {
  const int32_t n = static_cast<int32_t>(order.size(0));
  const int64_t tiles = (n + kTile - 1) / kTile;
  const auto stream = current_stream();
  const auto opts = boxes.options();
  at::Tensor keep = at::zeros({n}, opts.dtype(at::kByte));

  Segments segs{n, nullptr, nullptr, nullptr, nullptr, nullptr};
  at::Tensor seg_lo, seg_hi, lists, counts;
  int64_t band;
  if (cat.defined()) {
    seg_lo = at::empty({n}, opts.dtype(at::kInt));
    seg_hi = at::empty({n}, opts.dtype(at::kInt));
    at::Tensor flags = at::empty({2, n}, opts.dtype(at::kInt));
    launch(segment_bounds_kernel, grid_for(n, kThreads), kThreads, stream, cat.data_ptr<int64_t>(),
           n, seg_lo.data_ptr<int32_t>(), seg_hi.data_ptr<int32_t>(), flags.data_ptr<int32_t>());
    const at::Tensor ids = at::cumsum(flags, 1, at::kInt);
    lists = at::empty({2, n}, opts.dtype(at::kInt));
    counts = at::empty({2}, opts.dtype(at::kInt));
    launch(segment_lists_kernel, grid_for(n, kThreads), kThreads, stream, flags.data_ptr<int32_t>(),
           ids.data_ptr<int32_t>(), n, lists.data_ptr<int32_t>(), lists.data_ptr<int32_t>() + n,
           counts.data_ptr<int32_t>());
    segs = Segments{n, seg_lo.data_ptr<int32_t>(), seg_hi.data_ptr<int32_t>(),
                    lists.data_ptr<int32_t>(), lists.data_ptr<int32_t>() + n,
                    counts.data_ptr<int32_t>()};
    band = std::min<int64_t>(tiles, max_band);
  } else {
    band = std::min<int64_t>(tiles, std::max<int64_t>(kBatchedBand, kMaskBudgetBytes / (8 * static_cast<int64_t>(n))));
  }
  // Grid sizes (the kernels stride over the counts on the device): tiles <= n / 64 + segments.
  const int64_t max_tiles = cat.defined() ? std::min<int64_t>(n, tiles + 4096) : tiles;
  const int64_t max_segments = cat.defined() ? std::min<int64_t>(n, 1024) : 1;

  at::Tensor mask = at::empty({n, band}, opts.dtype(at::kLong));
  // Global removed bits, only for segments too large for shared memory.
  at::Tensor removed = at::empty({n > kSmemWords * kTile ? tiles + n + 1 : 1}, opts.dtype(at::kLong));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    at::Tensor sorted = at::empty({n, static_cast<int64_t>(sizeof(SortedBox<T>))}, opts.dtype(at::kByte));
    auto* sb = reinterpret_cast<SortedBox<T>*>(sorted.data_ptr<uint8_t>());
    launch(gather_boxes_kernel<scalar_t, T>, grid_for(n, kThreads), kThreads, stream,
           boxes.data_ptr<scalar_t>(), order.data_ptr<int64_t>(), n, sb);
    const T thr = nms_threshold_as<T>(iou_threshold);
    auto* mask_ptr = reinterpret_cast<u64*>(mask.data_ptr<int64_t>());
    const dim3 mask_grid(static_cast<unsigned>(std::min<int64_t>(max_tiles, 65535)),
                         static_cast<unsigned>(std::min<int64_t>(band, kMaskWordsPerBlock)));
    launch(mask_kernel<T>, mask_grid, kTile, stream, sb, segs, band, thr, mask_ptr);
    launch(scan_kernel<T>, static_cast<unsigned>(max_segments), kScanThreads, stream, sb, segs,
           mask_ptr, band, thr, reinterpret_cast<u64*>(removed.data_ptr<int64_t>()),
           keep.data_ptr<uint8_t>());
  });
  return keep;
}

}  // namespace
}  // namespace maskrcnn_fast
