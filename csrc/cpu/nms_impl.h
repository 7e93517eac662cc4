#pragma once
// The CPU NMS machinery shared by nms / batched_nms and the fused ops (rpn_proposals,
// detection_postprocess): the stable radix sort on order-preserving score keys, the
// per-coordinate work arrays and the blocked greedy scan.
//
// Everything is in an unnamed namespace on purpose: each kernel file gets its own copy, and
// the target_clones hot loop is resolved per file.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/nms_math.h"

namespace maskrcnn_fast {
namespace {

constexpr int64_t kBlock = 128;           // boxes resolved in order before a suppression pass
constexpr int64_t kParallelWork = 1 << 17;  // IoU tests below which one thread is faster
constexpr int64_t kMinChunk = 1024;       // boxes per thread in a split suppression pass
constexpr int64_t kBigSegment = 4096;     // categories this large get all threads to themselves

// ---- sorting ------------------------------------------------------------------------------

// Keys whose ascending order is descending score order; every NaN maps to 0 (first, as torch
// sorts NaN above +inf) and -0 to +0 (torch treats them as equal, so the index decides).
inline uint32_t descending_key(float x) {
  if (x != x) return 0;
  x = x + 0.0f;
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~u;
}

inline uint64_t descending_key(double x) {
  if (x != x) return 0;
  x = x + 0.0;
  uint64_t u;
  std::memcpy(&u, &x, sizeof(u));
  u = (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  return ~u;
}

// Stable LSD radix sort of (keys, vals) by the low `bytes` bytes of keys (the others must be
// 0), one byte per pass; bytes that every key shares are skipped.
template <typename K>
void radix_sort_pairs(std::vector<K>& keys, std::vector<int32_t>& vals, int bytes = sizeof(K)) {
  const int64_t n = static_cast<int64_t>(keys.size());
  std::vector<std::array<int64_t, 256>> hist(bytes);
  for (auto& h : hist) h.fill(0);
  for (int64_t i = 0; i < n; ++i) {
    const K k = keys[i];
    for (int d = 0; d < bytes; ++d) ++hist[d][(k >> (8 * d)) & 0xff];
  }
  std::vector<K> keys2(n);
  std::vector<int32_t> vals2(n);
  for (int d = 0; d < bytes; ++d) {
    auto& h = hist[d];
    if (*std::max_element(h.begin(), h.end()) == n) continue;
    int64_t sum = 0;
    for (auto& c : h) {
      const int64_t t = c;
      c = sum;
      sum += t;
    }
    for (int64_t i = 0; i < n; ++i) {
      const K k = keys[i];
      const int64_t o = h[(k >> (8 * d)) & 0xff]++;
      keys2[o] = k;
      vals2[o] = vals[i];
    }
    keys.swap(keys2);
    vals.swap(vals2);
  }
}

// Positions 0..n-1 in descending score order (stable), and the keys in that order.
template <typename scalar_t, typename T, typename K>
std::vector<int32_t> score_order(const scalar_t* scores, int64_t n, std::vector<K>& keys) {
  keys.resize(n);
  std::vector<int32_t> order(n);
  for (int64_t i = 0; i < n; ++i) {
    keys[i] = descending_key(static_cast<T>(scores[i]));
    order[i] = static_cast<int32_t>(i);
  }
  radix_sort_pairs(keys, order);
  return order;
}

// ---- the greedy scan ----------------------------------------------------------------------

// Per-coordinate arrays of the boxes in processing order; id is the box's input index.
template <typename T>
struct Work {
  std::unique_ptr<T[]> buf;
  std::unique_ptr<int32_t[]> ids;
  std::unique_ptr<uint8_t[]> dead_buf;
  T *x1, *y1, *x2, *y2, *area;
  int32_t* id;
  uint8_t* dead;
  explicit Work(int64_t n)
      : buf(new T[5 * n]), ids(new int32_t[n]), dead_buf(new uint8_t[n]) {
    x1 = buf.get();
    y1 = x1 + n;
    x2 = y1 + n;
    y2 = x2 + n;
    area = y2 + n;
    id = ids.get();
    dead = dead_buf.get();
  }
  // A view of [off, off + n): one category's boxes.
  Work(const Work& w, int64_t off)
      : x1(w.x1 + off), y1(w.y1 + off), x2(w.x2 + off), y2(w.y2 + off), area(w.area + off),
        id(w.id + off), dead(w.dead + off) {}
};

// dead[j] |= (box b suppresses box j) for j in [lo, hi). Branch-free, so it vectorises; the
// division stays (Zen 4 measurements: a division-free test with an exact fallback was slower).
template <typename T>
__attribute__((always_inline)) inline void suppress_body(
    const T* __restrict x1, const T* __restrict y1, const T* __restrict x2,
    const T* __restrict y2, const T* __restrict area, uint8_t* __restrict dead, int64_t lo,
    int64_t hi, T bx1, T by1, T bx2, T by2, T barea, T thr) {
  for (int64_t j = lo; j < hi; ++j) {
    dead[j] |= static_cast<uint8_t>(
        nms_suppresses(bx1, by1, bx2, by2, barea, x1[j], y1[j], x2[j], y2[j], area[j], thr));
  }
}

// The hot loop, compiled for several instruction sets and picked at load time; the
// arithmetic is IEEE either way (no contraction, no fast-math), so every clone gives the same
// bits.
#define MF_NMS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

MF_NMS_CLONES void suppress_loop(const float* x1, const float* y1, const float* x2,
                                 const float* y2, const float* area, uint8_t* dead, int64_t lo,
                                 int64_t hi, float bx1, float by1, float bx2, float by2,
                                 float barea, float thr) {
  suppress_body<float>(x1, y1, x2, y2, area, dead, lo, hi, bx1, by1, bx2, by2, barea, thr);
}

MF_NMS_CLONES void suppress_loop(const double* x1, const double* y1, const double* x2,
                                 const double* y2, const double* area, uint8_t* dead,
                                 int64_t lo, int64_t hi, double bx1, double by1, double bx2,
                                 double by2, double barea, double thr) {
  suppress_body<double>(x1, y1, x2, y2, area, dead, lo, hi, bx1, by1, bx2, by2, barea, thr);
}

// Box k (kept) suppresses the boxes [lo, hi).
template <typename T>
inline void suppress_range(const Work<T>& w, int64_t k, int64_t lo, int64_t hi, T thr) {
  if (lo >= hi) return;
  suppress_loop(w.x1, w.y1, w.x2, w.y2, w.area, w.dead, lo, hi, w.x1[k], w.y1[k], w.x2[k],
                w.y2[k], w.area[k], thr);
}

// Moves the live boxes of [lo, hi) to its front; returns their end.
template <typename T>
int64_t compact(const Work<T>& w, int64_t lo, int64_t hi) {
  int64_t o = lo;
  for (int64_t j = lo; j < hi; ++j) {
    if (w.dead[j]) continue;
    if (o != j) {
      w.x1[o] = w.x1[j];
      w.y1[o] = w.y1[j];
      w.x2[o] = w.x2[j];
      w.y2[o] = w.y2[j];
      w.area[o] = w.area[j];
      w.id[o] = w.id[j];
      w.dead[o] = 0;
    }
    ++o;
  }
  return o;
}

// Moves [from, from + len) to [to, to + len), to < from, and marks it live.
template <typename T>
void move_live(const Work<T>& w, int64_t to, int64_t from, int64_t len) {
  if (len <= 0 || to == from) return;
  for (T* a : {w.x1, w.y1, w.x2, w.y2, w.area}) std::memmove(a + to, a + from, len * sizeof(T));
  std::memmove(w.id + to, w.id + from, len * sizeof(int32_t));
  std::memset(w.dead + to, 0, len);
}

// Greedy NMS over w[0, n), which is sorted by descending score; calls on_keep(id) for each
// kept box, in order. Mutates w. With `parallel`, large suppression passes use all threads.
template <typename T, typename F>
void greedy_nms(const Work<T>& w, int64_t n, T thr, bool parallel, F&& on_keep) {
  std::memset(w.dead, 0, n);
  // No heap allocation unless a pass is split: categories of a few boxes are common.
  int64_t kept[kBlock];
  int64_t nkept = 0;
  const int64_t nthreads = parallel ? at::get_num_threads() : 1;
  std::vector<int64_t> ends;
  int64_t m = n;  // [0, m): boxes kept so far, then boxes not suppressed yet
  for (int64_t i = 0; i < m;) {
    const int64_t be = std::min(i + kBlock, m);
    nkept = 0;
    for (int64_t p = i; p < be; ++p) {
      if (w.dead[p]) continue;
      kept[nkept++] = p;
      on_keep(w.id[p]);
      suppress_range(w, p, p + 1, be, thr);
    }
    const int64_t rest = m - be;
    if (rest > 0) {
      const int64_t work = rest * nkept;
      const int64_t nchunks =
          (nthreads > 1 && work >= kParallelWork) ? std::min(nthreads, rest / kMinChunk) : 1;
      if (nchunks <= 1) {
        for (int64_t k = 0; k < nkept; ++k) suppress_range(w, kept[k], be, m, thr);
        m = compact(w, be, m);
      } else {
        ends.resize(nchunks);
        auto chunk_lo = [&](int64_t c) { return be + rest * c / nchunks; };
        at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
          for (int64_t c = c0; c < c1; ++c) {
            const int64_t lo = chunk_lo(c), hi = chunk_lo(c + 1);
            for (int64_t k = 0; k < nkept; ++k) suppress_range(w, kept[k], lo, hi, thr);
            ends[c] = compact(w, lo, hi);
          }
        });
        int64_t o = ends[0];
        for (int64_t c = 1; c < nchunks; ++c) {
          const int64_t len = ends[c] - chunk_lo(c);
          move_live(w, o, chunk_lo(c), len);
          o += len;
        }
        m = o;
      }
    }
    i = be;
  }
}

// Copies boxes[order[p]] to w[p] in the compute type, with its area.
template <typename scalar_t, typename T>
void gather_boxes(const Work<T>& w, const scalar_t* boxes, const int32_t* order, int64_t n) {
  at::parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      const int32_t q = order[p];
      const scalar_t* b = boxes + 4 * static_cast<int64_t>(q);
      const T x1 = static_cast<T>(b[0]), y1 = static_cast<T>(b[1]);
      const T x2 = static_cast<T>(b[2]), y2 = static_cast<T>(b[3]);
      w.x1[p] = x1;
      w.y1[p] = y1;
      w.x2[p] = x2;
      w.y2[p] = y2;
      w.area[p] = nms_box_area(x1, y1, x2, y2);
      w.id[p] = q;
    }
  });
}

template <typename T>
using KeyOf = std::conditional_t<std::is_same<T, double>::value, uint64_t, uint32_t>;

}  // namespace
}  // namespace maskrcnn_fast
