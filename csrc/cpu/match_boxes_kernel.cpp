// match_boxes on the CPU: torchvision's Matcher(box_iou(gt_i, boxes_i)) for every image at
// once, the IoU computed on the fly (never an [N, G, T] matrix).
//
// The boxes go in tiles of kTile, copied to structure-of-arrays so that the loops over a tile
// vectorise: pass 1 (low-quality matches only) reduces each ground truth's best IoU over the
// valid boxes, per tile into kLanes partial maxima, then over tiles; pass 2 walks the ground
// truths of each tile in order, keeping each box's running max and argmax and whether it
// equals some ground truth's best.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

// As in box_iou_kernel.cpp: the selects only vectorise when traps may be assumed off.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#include "common/match_boxes_checks.h"
#include "common/match_boxes_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int64_t kTile = 256;
constexpr int64_t kLanes = 16;

// Every array of a tile holds 4- or 8-byte elements: a bool array would make GCC pick
// 16-lane byte vectors for the whole loop, and give up on the float parts.
template <typename acc_t>
struct Tile {
  acc_t x1[kTile], y1[kTile], x2[kTile], y2[kTile], area[kTile];
  int32_t valid[kTile];
};

// Boxes [t0, t0 + kTile) of one image into the tile; rows past `count` (or T) are invalid.
template <typename T, typename acc_t>
void load_tile(const T* boxes, int64_t t0, int64_t count, Tile<acc_t>& tile) {
  for (int64_t j = 0; j < kTile; ++j) {
    const int64_t t = t0 + j;
    if (t < count) {
      const IouBox<acc_t> b = iou_box<T, acc_t>(boxes + t * 4);
      tile.x1[j] = b.x1;
      tile.y1[j] = b.y1;
      tile.x2[j] = b.x2;
      tile.y2[j] = b.y2;
      tile.area[j] = b.area;
      tile.valid[j] = 1;
    } else {
      tile.x1[j] = tile.y1[j] = tile.x2[j] = tile.y2[j] = tile.area[j] = acc_t(0);
      tile.valid[j] = 0;
    }
  }
}

template <typename T, typename acc_t>
C10_ALWAYS_INLINE acc_t tile_iou(const IouBox<acc_t>& a, const Tile<acc_t>& tile, int64_t j) {
  IouBox<acc_t> b;
  b.x1 = tile.x1[j];
  b.y1 = tile.y1[j];
  b.x2 = tile.x2[j];
  b.y2 = tile.y2[j];
  b.area = tile.area[j];
  return pair_iou<T, acc_t>(a, b);
}

// Pass 1 on one tile: best[g] = max(best[g], max over the tile's valid boxes of IoU(g, box)),
// through kLanes partial maxima so that the reduction vectorises.
template <typename T, typename acc_t>
C10_ALWAYS_INLINE void tile_best_per_gt(const IouBox<acc_t>* gts, int64_t num_gt,
                                        const Tile<acc_t>& tile, acc_t* best) {
  constexpr acc_t kLowest = -std::numeric_limits<acc_t>::infinity();
  for (int64_t g = 0; g < num_gt; ++g) {
    const IouBox<acc_t> a = gts[g];
    acc_t part[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) part[l] = kLowest;
    for (int64_t j0 = 0; j0 < kTile; j0 += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const acc_t v = tile_iou<T, acc_t>(a, tile, j0 + l);
        part[l] = max_update(part[l], tile.valid[j0 + l] != 0 ? v : kLowest);
      }
    }
    acc_t m = best[g];
    for (int64_t l = 0; l < kLanes; ++l) m = max_update(m, part[l]);
    best[g] = m;
  }
}

// Pass 2 on one tile: each box's decision, written to out[0, n).
template <typename T, typename acc_t>
C10_ALWAYS_INLINE void tile_match(const IouBox<acc_t>* gts, const acc_t* gt_best, int64_t num_gt,
                                  bool low_quality, acc_t high, acc_t low,
                                  const Tile<acc_t>& tile, int64_t n, int64_t* out) {
  acc_t best[kTile], iou[kTile];
  int32_t arg[kTile];
  int32_t lowq[kTile];
  for (int64_t j = 0; j < kTile; ++j) {
    best[j] = -std::numeric_limits<acc_t>::infinity();
    arg[j] = 0;
    lowq[j] = 0;
  }
  for (int64_t g = 0; g < num_gt; ++g) {
    const IouBox<acc_t> a = gts[g];
    const acc_t gb = low_quality ? gt_best[g] : std::numeric_limits<acc_t>::quiet_NaN();
    const int32_t gi = static_cast<int32_t>(g);
    // Two simple loops vectorise where one fused loop did not.
    for (int64_t j = 0; j < kTile; ++j) iou[j] = tile_iou<T, acc_t>(a, tile, j);
    for (int64_t j = 0; j < kTile; ++j) {
      const acc_t v = iou[j];
      const bool take = argmax_takes(v, best[j]);
      best[j] = take ? v : best[j];
      arg[j] = take ? gi : arg[j];
      lowq[j] = lowq[j] | static_cast<int32_t>(v == gb);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    out[j] = tile.valid[j] != 0 ? match_decision(best[j], static_cast<int64_t>(arg[j]), high,
                                                 low, lowq[j] != 0)
                                : kBelowLowThreshold;
  }
}

struct MatchShape {
  int64_t N, G, T, box_stride;  // box_stride: T * 4, or 0 when every image shares the boxes
};

template <typename T, typename acc_t>
C10_ALWAYS_INLINE void match_tasks(const T* gt, const int64_t* gt_counts, const T* boxes,
                                   const int64_t* box_counts, const MatchShape& s,
                                   const acc_t* gt_best, bool low_quality, acc_t high, acc_t low,
                                   int64_t* out, int64_t begin, int64_t end) {
  const int64_t tiles = (s.T + kTile - 1) / kTile;
  std::vector<IouBox<acc_t>> gts(std::max<int64_t>(s.G, 1));
  int64_t loaded = -1;
  Tile<acc_t> tile;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / tiles;
    const int64_t t0 = (task - n * tiles) * kTile;
    const int64_t num_gt = gt_counts[n];
    const int64_t count = box_counts ? box_counts[n] : s.T;
    const int64_t len = std::min(kTile, s.T - t0);
    int64_t* o = out + n * s.T + t0;
    if (num_gt == 0) {
      std::fill(o, o + len, kBelowLowThreshold);
      continue;
    }
    if (loaded != n) {
      for (int64_t g = 0; g < num_gt; ++g) gts[g] = iou_box<T, acc_t>(gt + (n * s.G + g) * 4);
      loaded = n;
    }
    load_tile<T, acc_t>(boxes + n * s.box_stride, t0, count, tile);
    tile_match<T, acc_t>(gts.data(), gt_best + n * s.G, num_gt, low_quality, high, low, tile,
                         len, o);
  }
}

// Pass 1 for tasks [begin, end): partial[task][g] over the task's tile.
template <typename T, typename acc_t>
C10_ALWAYS_INLINE void best_tasks(const T* gt, const int64_t* gt_counts, const T* boxes,
                                  const int64_t* box_counts, const MatchShape& s, acc_t* partial,
                                  int64_t begin, int64_t end) {
  const int64_t tiles = (s.T + kTile - 1) / kTile;
  std::vector<IouBox<acc_t>> gts(std::max<int64_t>(s.G, 1));
  int64_t loaded = -1;
  Tile<acc_t> tile;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / tiles;
    const int64_t t0 = (task - n * tiles) * kTile;
    const int64_t num_gt = gt_counts[n];
    acc_t* p = partial + task * s.G;
    std::fill(p, p + s.G, -std::numeric_limits<acc_t>::infinity());
    const int64_t count = box_counts ? box_counts[n] : s.T;
    if (num_gt == 0 || t0 >= count) continue;
    if (loaded != n) {
      for (int64_t g = 0; g < num_gt; ++g) gts[g] = iou_box<T, acc_t>(gt + (n * s.G + g) * 4);
      loaded = n;
    }
    load_tile<T, acc_t>(boxes + n * s.box_stride, t0, count, tile);
    tile_best_per_gt<T, acc_t>(gts.data(), num_gt, tile, p);
  }
}

// float gets AVX2 / AVX-512 clones picked at load time; every clone rounds identically.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MF_CLONES
#endif

MF_CLONES void match_tasks_f32(const float* gt, const int64_t* gt_counts, const float* boxes,
                               const int64_t* box_counts, const MatchShape& s,
                               const float* gt_best, bool low_quality, float high, float low,
                               int64_t* out, int64_t begin, int64_t end) {
  match_tasks<float, float>(gt, gt_counts, boxes, box_counts, s, gt_best, low_quality, high, low,
                            out, begin, end);
}

MF_CLONES void best_tasks_f32(const float* gt, const int64_t* gt_counts, const float* boxes,
                              const int64_t* box_counts, const MatchShape& s, float* partial,
                              int64_t begin, int64_t end) {
  best_tasks<float, float>(gt, gt_counts, boxes, box_counts, s, partial, begin, end);
}

// float goes to its clones; the other dtypes to the generic code.
template <typename T, typename acc_t>
void best_dispatch(const T* gt, const int64_t* gt_counts, const T* boxes,
                   const int64_t* box_counts, const MatchShape& s, acc_t* partial, int64_t begin,
                   int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    best_tasks_f32(gt, gt_counts, boxes, box_counts, s, partial, begin, end);
  } else {
    best_tasks<T, acc_t>(gt, gt_counts, boxes, box_counts, s, partial, begin, end);
  }
}

template <typename T, typename acc_t>
void match_dispatch(const T* gt, const int64_t* gt_counts, const T* boxes,
                    const int64_t* box_counts, const MatchShape& s, const acc_t* gt_best,
                    bool low_quality, acc_t high, acc_t low, int64_t* out, int64_t begin,
                    int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    match_tasks_f32(gt, gt_counts, boxes, box_counts, s, gt_best, low_quality, high, low, out,
                    begin, end);
  } else {
    match_tasks<T, acc_t>(gt, gt_counts, boxes, box_counts, s, gt_best, low_quality, high, low,
                          out, begin, end);
  }
}

at::Tensor match_boxes_cpu(const at::Tensor& gt_boxes, const at::Tensor& gt_counts,
                           const at::Tensor& boxes, const c10::optional<at::Tensor>& box_counts,
                           double high_threshold, double low_threshold,
                           bool allow_low_quality_matches) {
  check_match_boxes(gt_boxes, gt_counts, boxes, box_counts, high_threshold, low_threshold);
  const at::Tensor gt = gt_boxes.contiguous();
  const at::Tensor bx = boxes.contiguous();
  const at::Tensor gc = gt_counts.contiguous();
  at::Tensor bc;
  if (box_counts.has_value()) bc = box_counts->contiguous();
  MatchShape s;
  s.N = gt.size(0);
  s.G = gt.size(1);
  s.T = bx.size(-2);
  s.box_stride = bx.dim() == 3 ? s.T * 4 : 0;
  check_count_values(gc, s.G, "gt_counts", "gt_boxes.size(1)");
  if (bc.defined()) check_count_values(bc, s.T, "box_counts", "boxes.size(-2)");
  TORCH_CHECK(s.G <= static_cast<int64_t>(INT32_MAX), "gt_boxes: at most 2^31 - 1 ground truths "
              "per image are supported, got ", s.G);
  at::Tensor out = at::empty({s.N, s.T}, gt.options().dtype(at::kLong));
  if (s.N == 0 || s.T == 0) return out;
  const int64_t tasks = s.N * ((s.T + kTile - 1) / kTile);
  const int64_t* gc_ptr = gc.const_data_ptr<int64_t>();
  const int64_t* bc_ptr = bc.defined() ? bc.const_data_ptr<int64_t>() : nullptr;
  int64_t* out_ptr = out.mutable_data_ptr<int64_t>();
  // A tile is kTile boxes against every ground truth, under 1 ns per pair once vectorised:
  // chunks of ~256k pairs (~0.1 ms) keep small problems (the box head's) on one thread.
  const int64_t grain = std::max<int64_t>(1, 262144 / (kTile * std::max<int64_t>(s.G, 1)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gt.scalar_type(), "match_boxes", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gt_ptr = gt.const_data_ptr<scalar_t>();
    const scalar_t* bx_ptr = bx.const_data_ptr<scalar_t>();
    // Each ground truth's best IoU over its image's valid boxes, [N, G].
    std::vector<acc_t> gt_best(std::max<int64_t>(s.N * s.G, 1));
    if (allow_low_quality_matches && s.G > 0) {
      std::vector<acc_t> partial(tasks * s.G);
      at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
        best_dispatch<scalar_t, acc_t>(gt_ptr, gc_ptr, bx_ptr, bc_ptr, s, partial.data(), begin,
                                       end);
      });
      const int64_t tiles = tasks / s.N;
      for (int64_t n = 0; n < s.N; ++n) {
        acc_t* b = gt_best.data() + n * s.G;
        std::fill(b, b + s.G, -std::numeric_limits<acc_t>::infinity());
        for (int64_t k = 0; k < tiles; ++k) {
          const acc_t* p = partial.data() + (n * tiles + k) * s.G;
          for (int64_t g = 0; g < s.G; ++g) b[g] = max_update(b[g], p[g]);
        }
      }
    }
    // torch compares the IoU with a Python float in the IoU's dtype.
    const acc_t high = static_cast<acc_t>(high_threshold);
    const acc_t low = static_cast<acc_t>(low_threshold);
    at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
      match_dispatch<scalar_t, acc_t>(gt_ptr, gc_ptr, bx_ptr, bc_ptr, s, gt_best.data(),
                                      allow_low_quality_matches, high, low, out_ptr, begin, end);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) { m.impl("match_boxes", &match_boxes_cpu); }

}  // namespace maskrcnn_fast

#pragma GCC pop_options
