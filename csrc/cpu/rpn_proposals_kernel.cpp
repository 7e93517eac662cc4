// rpn_proposals on the CPU.
//
// One task per (image, level), handed to the threads largest first: select the level's top-k
// logits (radix select on order-preserving keys, then a sort of the few survivors), decode only
// those k candidates (anchors computed from their (y, x, a), never materialised), filter, and
// run the greedy NMS of cpu/nms_impl.h on the survivors, which are already in score order. Then
// per image a merge of the levels' kept lists by probability gives the post-NMS top-n.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <numeric>
#include <utility>
#include <vector>

#include "common/rpn_proposals_checks.h"
#include "common/rpn_proposals_math.h"
#include "cpu/nms_impl.h"

namespace maskrcnn_fast {
namespace {

constexpr int kSelectBits = 12;  // histogram bins of the radix select: 4096 (16 KB)

// The k largest values of one image's level x ([A, H, W] in memory), as torchvision's indices
// into its (y, x, a)-ordered flattening: by descending value (NaN first, as torch.topk ranks
// it), ties by that index. The histogram bins the top bits of the value as a float key (a
// monotone map, exact ties included), so only the boundary bin needs a full comparison.
template <typename scalar_t, typename T>
void select_top_k(const scalar_t* x, int64_t A, int64_t hw, int64_t k,
                  std::vector<std::pair<KeyOf<T>, int32_t>>& out) {
  out.clear();
  if (k <= 0) return;
  const int64_t n = A * hw;
  std::vector<uint16_t> bin(n);
  std::array<int64_t, (1 << kSelectBits)> hist{};
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t b =
        static_cast<uint16_t>(descending_key(static_cast<float>(x[i])) >> (32 - kSelectBits));
    bin[i] = b;
    ++hist[b];
  }
  int64_t last = 0, below = 0;
  while (below + hist[last] < k) below += hist[last++];
  out.reserve(below + hist[last]);
  for (int64_t a = 0; a < A; ++a) {
    for (int64_t yx = 0; yx < hw; ++yx) {
      const int64_t i = a * hw + yx;
      if (bin[i] <= last) {
        out.emplace_back(descending_key(static_cast<T>(x[i])), static_cast<int32_t>(yx * A + a));
      }
    }
  }
  if (static_cast<int64_t>(out.size()) > 2 * k) {
    std::nth_element(out.begin(), out.begin() + k, out.end());
    out.resize(k);
  }
  std::sort(out.begin(), out.end());
  out.resize(k);
}

template <typename scalar_t>
struct LevelResult {
  std::vector<scalar_t> boxes;  // [k, 4] candidates in rank order
  std::vector<scalar_t> probs;  // [k]
  std::vector<int32_t> kept;    // ranks of the kept candidates, by descending probability
};

template <typename scalar_t>
void rpn_cpu_impl(const RpnLayout& layout, at::TensorList objectness, at::TensorList deltas,
                  at::TensorList cell_anchors, const int64_t* sizes, int64_t post_nms_top_n,
                  double nms_thresh, double min_size, double score_thresh, at::Tensor& boxes,
                  at::Tensor& scores, at::Tensor& counts) {
  using T = at::opmath_type<scalar_t>;
  const int64_t N = layout.num_images, L = layout.num_levels;
  const RpnFilter<T> filter = make_rpn_filter<scalar_t, T>(min_size, score_thresh);
  const T xform_clip = static_cast<T>(static_cast<scalar_t>(std::log(1000.0 / 16)));
  const T thr = nms_threshold_as<T>(nms_thresh);
  std::vector<at::Tensor> ob(L), de(L), ca(L);
  for (int64_t l = 0; l < L; ++l) {
    ob[l] = objectness[l].contiguous();
    de[l] = deltas[l].contiguous();
    ca[l] = cell_anchors[l].to(objectness[l].scalar_type()).contiguous();
  }
  std::vector<LevelResult<scalar_t>> res(N * L);

  auto run_task = [&](int64_t t) {
    const int64_t n = t / L, l = t % L;
    const RpnLevel& lv = layout.level[l];
    const int64_t hw = lv.height * lv.width, A = lv.num_anchors, k = lv.k;
    const scalar_t* x = ob[l].const_data_ptr<scalar_t>() + n * A * hw;
    const scalar_t* d = de[l].const_data_ptr<scalar_t>() + n * 4 * A * hw;
    const scalar_t* cell = ca[l].const_data_ptr<scalar_t>();
    std::vector<std::pair<KeyOf<T>, int32_t>> top;
    select_top_k<scalar_t, T>(x, A, hw, k, top);
    const DecodeParams<T> p = rpn_decode_params<scalar_t, T>(xform_clip, sizes[2 * n],
                                                             sizes[2 * n + 1]);
    LevelResult<scalar_t>& r = res[t];
    r.boxes.resize(4 * k);
    r.probs.resize(k);
    Work<T> w(std::max<int64_t>(k, 1));
    int64_t m = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t tv = top[j].second;
      const int64_t mem = (tv % A) * hw + tv / A;
      scalar_t* b = r.boxes.data() + 4 * j;
      if (!rpn_candidate<scalar_t, T>(lv, d, cell, mem, x[mem], p, filter, b, &r.probs[j])) {
        continue;
      }
      w.x1[m] = static_cast<T>(b[0]);
      w.y1[m] = static_cast<T>(b[1]);
      w.x2[m] = static_cast<T>(b[2]);
      w.y2[m] = static_cast<T>(b[3]);
      w.area[m] = nms_box_area(w.x1[m], w.y1[m], w.x2[m], w.y2[m]);
      w.id[m] = static_cast<int32_t>(j);
      ++m;
    }
    r.kept.reserve(m);
    greedy_nms(w, m, thr, /*parallel=*/false, [&](int32_t id) { r.kept.push_back(id); });
  };

  // Largest tasks first, pulled by the threads one at a time: levels differ by 100x in size.
  const int64_t ntasks = N * L;
  std::vector<int64_t> order(ntasks);
  std::iota(order.begin(), order.end(), 0);
  auto cost = [&](int64_t t) {
    const RpnLevel& lv = layout.level[t % L];
    return lv.num_anchors * lv.height * lv.width + 64 * lv.k;
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return cost(a) > cost(b); });
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), ntasks);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t i = next++; i < ntasks; i = next++) run_task(order[i]);
  });

  // Merge the levels' kept lists: highest probability first, ties to the lower level (the
  // order of a stable sort over torchvision's level-major concatenation).
  scalar_t* ob_ptr = boxes.mutable_data_ptr<scalar_t>();
  scalar_t* os_ptr = scores.mutable_data_ptr<scalar_t>();
  int64_t* oc_ptr = counts.mutable_data_ptr<int64_t>();
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<size_t> head(L);
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(head.begin(), head.end(), 0);
      int64_t j = 0;
      for (; j < post_nms_top_n; ++j) {
        int64_t best = -1;
        T best_p = T(0);
        for (int64_t l = 0; l < L; ++l) {
          const LevelResult<scalar_t>& r = res[n * L + l];
          if (head[l] >= r.kept.size()) continue;
          const T pl = static_cast<T>(r.probs[r.kept[head[l]]]);
          if (best < 0 || pl > best_p) {
            best = l;
            best_p = pl;
          }
        }
        if (best < 0) break;
        const LevelResult<scalar_t>& r = res[n * L + best];
        const int32_t rank = r.kept[head[best]++];
        std::copy_n(r.boxes.data() + 4 * rank, 4, ob_ptr + (n * post_nms_top_n + j) * 4);
        os_ptr[n * post_nms_top_n + j] = r.probs[rank];
      }
      oc_ptr[n] = j;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rpn_proposals_cpu(
    at::TensorList objectness, at::TensorList pred_bbox_deltas, at::TensorList cell_anchors,
    at::IntArrayRef strides, const at::Tensor& image_sizes, int64_t pre_nms_top_n,
    int64_t post_nms_top_n, double nms_thresh, double min_size, double score_thresh) {
  const RpnLayout layout =
      check_rpn_proposals(objectness, pred_bbox_deltas, cell_anchors, strides, image_sizes,
                          pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh);
  const int64_t N = layout.num_images;
  const auto opts = objectness[0].options();
  at::Tensor boxes = at::zeros({N, post_nms_top_n, 4}, opts);
  at::Tensor scores = at::zeros({N, post_nms_top_n}, opts);
  at::Tensor counts = at::zeros({N}, opts.dtype(at::kLong));
  if (N == 0 || post_nms_top_n == 0 || layout.num_candidates == 0) {
    return {boxes, scores, counts};
  }
  const at::Tensor sizes = image_sizes.to(at::kLong).contiguous();
  const int64_t* sz = sizes.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < 2 * N; ++i) {
    TORCH_CHECK(sz[i] >= 0, "image_sizes must be non-negative, got ", image_sizes);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, opts.dtype().toScalarType(),
                                  "rpn_proposals_cpu", [&] {
    rpn_cpu_impl<scalar_t>(layout, objectness, pred_bbox_deltas, cell_anchors, sz,
                           post_nms_top_n, nms_thresh, min_size, score_thresh, boxes, scores,
                           counts);
  });
  return {boxes, scores, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("rpn_proposals", &rpn_proposals_cpu);
}

}  // namespace maskrcnn_fast
