// CPU nms and batched_nms.
//
// Both sort once (a stable LSD radix sort on order-preserving integer keys: descending score,
// NaN first and ties by index, as torch.sort(stable=True, descending=True) orders them), copy
// the boxes into per-coordinate arrays in that order, and run the greedy scan in blocks of
// kBlock boxes: resolve a block in order, then let its kept boxes suppress every later box in
// one vectorised pass per kept box (split over threads when large), then compact the survivors
// so that suppressed boxes cost nothing afterwards. batched_nms sorts by (category, score) and
// runs one such scan per category, categories in parallel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/nms_checks.h"
#include "common/nms_math.h"
#include "cpu/nms_impl.h"

namespace maskrcnn_fast {
namespace {

at::Tensor to_index_tensor(const std::vector<int32_t>& v, const at::Tensor& like) {
  at::Tensor out = at::empty({static_cast<int64_t>(v.size())}, like.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (size_t i = 0; i < v.size(); ++i) o[i] = v[i];
  return out;
}

// ---- entry points -------------------------------------------------------------------------

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_inputs(boxes, scores, iou_threshold);
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const at::Tensor b = boxes.contiguous(), s = scores.contiguous();
  std::vector<int32_t> kept;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "nms_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    std::vector<KeyOf<T>> keys;
    const std::vector<int32_t> order = score_order<scalar_t, T>(s.data_ptr<scalar_t>(), n, keys);
    Work<T> w(n);
    gather_boxes(w, b.data_ptr<scalar_t>(), order.data(), n);
    kept.reserve(n);
    greedy_nms(w, n, nms_threshold_as<T>(iou_threshold), /*parallel=*/true,
               [&](int32_t id) { kept.push_back(id); });
  });
  return to_index_tensor(kept, boxes);
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                           const at::Tensor& idxs, double iou_threshold) {
  check_batched_nms_inputs(boxes, scores, idxs, iou_threshold);
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const at::Tensor b = boxes.contiguous(), s = scores.contiguous();
  const at::Tensor cat = idxs.to(at::kLong).contiguous();
  const int64_t* c = cat.data_ptr<int64_t>();
  std::vector<int32_t> kept;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "batched_nms_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    std::vector<KeyOf<T>> keys;
    const std::vector<int32_t> by_score =
        score_order<scalar_t, T>(s.data_ptr<scalar_t>(), n, keys);
    // Then stably by category: (category, descending score) order, categories contiguous.
    const auto range = std::minmax_element(c, c + n);
    const uint64_t cmin = static_cast<uint64_t>(*range.first);
    const uint64_t span = static_cast<uint64_t>(*range.second) - cmin;
    int bytes = 1;
    while (bytes < 8 && (span >> (8 * bytes)) != 0) ++bytes;
    std::vector<uint64_t> ckeys(n);
    for (int64_t p = 0; p < n; ++p) ckeys[p] = static_cast<uint64_t>(c[by_score[p]]) - cmin;
    std::vector<int32_t> order = by_score;
    radix_sort_pairs(ckeys, order, bytes);

    Work<T> w(n);
    gather_boxes(w, b.data_ptr<scalar_t>(), order.data(), n);
    std::vector<int64_t> seg_start{0};
    for (int64_t p = 1; p < n; ++p)
      if (ckeys[p] != ckeys[p - 1]) seg_start.push_back(p);
    seg_start.push_back(n);
    const int64_t nseg = static_cast<int64_t>(seg_start.size()) - 1;

    std::vector<uint8_t> keep(n, 0);
    const T thr = nms_threshold_as<T>(iou_threshold);
    auto run_segment = [&](int64_t k, bool parallel) {
      const int64_t lo = seg_start[k], len = seg_start[k + 1] - lo;
      greedy_nms(Work<T>(w, lo), len, thr, parallel, [&](int32_t id) { keep[id] = 1; });
    };
    // Large categories one after another with every thread; the others spread over threads
    // in contiguous groups of about equal cost (quadratic in the size, at worst).
    std::vector<int64_t> small;
    for (int64_t k = 0; k < nseg; ++k) {
      if (seg_start[k + 1] - seg_start[k] >= kBigSegment) {
        run_segment(k, true);
      } else {
        small.push_back(k);
      }
    }
    const int64_t ngroups = std::min<int64_t>(at::get_num_threads(), small.size());
    if (ngroups <= 1) {
      for (int64_t k : small) run_segment(k, false);
    } else {
      std::vector<double> cost(small.size() + 1, 0.0);
      for (size_t i = 0; i < small.size(); ++i) {
        const double len = static_cast<double>(seg_start[small[i] + 1] - seg_start[small[i]]);
        cost[i + 1] = cost[i] + len * len + 64.0 * len;
      }
      std::vector<size_t> group_lo(ngroups + 1, small.size());
      group_lo[0] = 0;
      for (int64_t g = 1; g < ngroups; ++g) {
        const double target = cost.back() * g / ngroups;
        group_lo[g] = std::lower_bound(cost.begin(), cost.end(), target) - cost.begin();
        group_lo[g] = std::max(group_lo[g], group_lo[g - 1]);
      }
      at::parallel_for(0, ngroups, 1, [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g)
          for (size_t i = group_lo[g]; i < group_lo[g + 1]; ++i) run_segment(small[i], false);
      });
    }
    kept.reserve(n);
    for (int64_t p = 0; p < n; ++p)
      if (keep[by_score[p]]) kept.push_back(by_score[p]);
  });
  return to_index_tensor(kept, boxes);
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace maskrcnn_fast
