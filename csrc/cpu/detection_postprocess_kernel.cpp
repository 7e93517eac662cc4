// detection_postprocess on the CPU.
//
// 1. Rows (all images' ROIs) in parallel: softmax, and for the classes above score_thresh only
//    (a few percent of them) the decode, clip and size test (common/detection_postprocess_math.h);
//    each surviving (ROI, class) gets a flag, its probability and its box.
// 2. (image, class) tasks in parallel: gather the class's candidates in ROI order, sort them by
//    descending probability (ties: lower ROI first, a stable sort), greedy NMS (cpu/nms_impl.h).
// 3. Per image: the detections_per_img most probable kept boxes over all classes (ties: lower
//    candidate index first).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

// The exp loop below must stay branch-free to vectorise: GCC only if-converts the selects of
// mf_exp's clamps when floating-point traps may be assumed off. Arithmetic and results are
// unchanged (no contraction, no reassociation); only exception flags differ.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#include "common/box_coder_checks.h"
#include "common/detection_postprocess_checks.h"
#include "common/detection_postprocess_math.h"
#include "cpu/nms_impl.h"

namespace maskrcnn_fast {
namespace {

// e[c] = exp(x[c] - max): the softmax's exps, vectorised (the per-row cost of the op); every
// clone gives the same bits.
__attribute__((target_clones("avx512f", "avx2", "default"))) void exp_shifted(
    const float* __restrict x, int64_t C, float max, float* __restrict e) {
  for (int64_t c = 0; c < C; ++c) e[c] = mf_exp(x[c] - max);
}

void exp_shifted(const double* x, int64_t C, double max, double* e) {
  for (int64_t c = 0; c < C; ++c) e[c] = mf_exp(x[c] - max);
}

template <typename scalar_t>
void detection_cpu_impl(const DetectionShape& s, const at::Tensor& logits, const at::Tensor& reg,
                        const at::Tensor& props, const int64_t* counts, const int64_t* sizes,
                        at::ArrayRef<double> weights, double bbox_xform_clip, double score_thresh,
                        double nms_thresh, int64_t D, at::Tensor& out_boxes,
                        at::Tensor& out_scores, at::Tensor& out_labels, at::Tensor& out_counts,
                        at::Tensor& out_index) {
  using T = at::opmath_type<scalar_t>;
  using K = KeyOf<T>;
  const int64_t N = s.num_images, P = s.num_proposals, C = s.num_classes, M = P * (C - 1);
  const scalar_t* lg = logits.const_data_ptr<scalar_t>();
  const scalar_t* rg = reg.const_data_ptr<scalar_t>();
  const scalar_t* pr = props.const_data_ptr<scalar_t>();
  const DecodeParams<T> base = make_decode_params<scalar_t, T>(weights, bbox_xform_clip, {});
  const T thr = static_cast<T>(static_cast<scalar_t>(score_thresh));
  const T min_size = static_cast<T>(static_cast<scalar_t>(1e-2));
  const T iou = nms_threshold_as<T>(nms_thresh);

  // 1. Candidates. Only flagged entries of prob / box are ever read: no initialisation.
  std::unique_ptr<uint8_t[]> flag(new uint8_t[N * M]);
  std::unique_ptr<scalar_t[]> prob(new scalar_t[N * M]);
  std::unique_ptr<scalar_t[]> box(new scalar_t[4 * N * M]);
  at::parallel_for(0, N * P, 64, [&](int64_t r0, int64_t r1) {
    std::vector<T> xs(C), ex(C);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / P, p = r - n * P;
      uint8_t* f = flag.get() + r * (C - 1);
      if (p >= counts[n]) {
        std::fill_n(f, C - 1, uint8_t(0));
        continue;
      }
      const scalar_t* row = lg + r * C;
      // softmax_stats / softmax_prob's arithmetic, each exp computed once.
      for (int64_t c = 0; c < C; ++c) xs[c] = static_cast<T>(row[c]);
      const T mx = softmax_max<T, T>(xs.data(), C);
      exp_shifted(xs.data(), C, mx, ex.data());
      T sum = T(0);
      for (int64_t c = 0; c < C; ++c) sum += ex[c];
      DecodeParams<T> dp = base;
      set_image_size<scalar_t, T>(dp, sizes[2 * n], sizes[2 * n + 1]);
      const scalar_t* b = pr + 4 * r;
      const BoxFrame<T> frame = box_frame<T>(b[0], b[1], b[2], b[3]);
      for (int64_t c = 1; c < C; ++c) {
        const int64_t q = r * (C - 1) + c - 1;
        const scalar_t pc = static_cast<scalar_t>(ex[c] / sum);
        bool ok = static_cast<T>(pc) > thr;
        if (ok) {
          ok = detection_box<scalar_t, T>(frame, rg + r * 4 * C + 4 * c, dp, min_size,
                                          box.get() + 4 * q);
          prob[q] = pc;
        }
        f[c - 1] = ok;
      }
    }
  });

  // 2. Per (image, class): sort, NMS. kept[t]: (key, candidate index within the image).
  const int64_t ntasks = N * (C - 1);
  std::vector<std::vector<std::pair<K, int32_t>>> kept(ntasks);
  at::parallel_for(0, ntasks, 4, [&](int64_t t0, int64_t t1) {
    std::vector<std::pair<K, int32_t>> cand;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / (C - 1), c1 = t - n * (C - 1);
      cand.clear();
      const int64_t base_q = n * M + c1;
      for (int64_t p = 0; p < counts[n]; ++p) {
        const int64_t q = base_q + p * (C - 1);
        if (flag[q]) cand.emplace_back(descending_key(static_cast<T>(prob[q])),
                                       static_cast<int32_t>(q - n * M));
      }
      if (cand.empty()) continue;
      std::sort(cand.begin(), cand.end());
      const int64_t m = static_cast<int64_t>(cand.size());
      Work<T> w(m);
      for (int64_t i = 0; i < m; ++i) {
        const scalar_t* bb = box.get() + 4 * (n * M + cand[i].second);
        w.x1[i] = static_cast<T>(bb[0]);
        w.y1[i] = static_cast<T>(bb[1]);
        w.x2[i] = static_cast<T>(bb[2]);
        w.y2[i] = static_cast<T>(bb[3]);
        w.area[i] = nms_box_area(w.x1[i], w.y1[i], w.x2[i], w.y2[i]);
        w.id[i] = static_cast<int32_t>(i);
      }
      auto& out = kept[t];
      greedy_nms(w, m, iou, /*parallel=*/false, [&](int32_t i) { out.push_back(cand[i]); });
    }
  });

  // 3. Per image: the top D over all classes.
  scalar_t* ob = out_boxes.mutable_data_ptr<scalar_t>();
  scalar_t* os = out_scores.mutable_data_ptr<scalar_t>();
  int64_t* ol = out_labels.mutable_data_ptr<int64_t>();
  int64_t* oc = out_counts.mutable_data_ptr<int64_t>();
  int64_t* oi = out_index.mutable_data_ptr<int64_t>();
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<std::pair<K, int32_t>> all;
    for (int64_t n = n0; n < n1; ++n) {
      all.clear();
      for (int64_t c1 = 0; c1 < C - 1; ++c1) {
        const auto& k = kept[n * (C - 1) + c1];
        all.insert(all.end(), k.begin(), k.end());
      }
      const int64_t d = std::min<int64_t>(D, static_cast<int64_t>(all.size()));
      std::partial_sort(all.begin(), all.begin() + d, all.end());
      for (int64_t j = 0; j < d; ++j) {
        const int64_t q = all[j].second;
        const int64_t o = n * D + j;
        std::copy_n(box.get() + 4 * (n * M + q), 4, ob + 4 * o);
        os[o] = prob[n * M + q];
        ol[o] = q % (C - 1) + 1;
        oi[o] = n * P + q / (C - 1);
      }
      oc[n] = d;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> detection_postprocess_cpu(
    const at::Tensor& class_logits, const at::Tensor& box_regression, const at::Tensor& proposals,
    const c10::optional<at::Tensor>& proposal_counts, const at::Tensor& image_sizes,
    at::ArrayRef<double> weights, double bbox_xform_clip, double score_thresh, double nms_thresh,
    int64_t detections_per_img) {
  const DetectionShape s = check_detection_postprocess(
      class_logits, box_regression, proposals, proposal_counts, image_sizes, weights,
      bbox_xform_clip, score_thresh, nms_thresh, detections_per_img);
  const int64_t N = s.num_images, P = s.num_proposals, C = s.num_classes, D = detections_per_img;
  const auto opts = class_logits.options();
  at::Tensor boxes = at::zeros({N, D, 4}, opts);
  at::Tensor scores = at::zeros({N, D}, opts);
  at::Tensor labels = at::zeros({N, D}, opts.dtype(at::kLong));
  at::Tensor counts = at::zeros({N}, opts.dtype(at::kLong));
  at::Tensor index = at::zeros({N, D}, opts.dtype(at::kLong));
  if (N == 0 || P == 0 || C <= 1 || D == 0) return {boxes, scores, labels, counts, index};

  const at::Tensor sizes = image_sizes.to(at::kLong).contiguous();
  const int64_t* sz = sizes.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < 2 * N; ++i) {
    TORCH_CHECK(sz[i] >= 0, "image_sizes must be non-negative, got ", image_sizes);
  }
  const at::Tensor pc = proposal_counts.has_value()
                            ? proposal_counts->to(at::kLong).contiguous()
                            : at::full({N}, P, opts.dtype(at::kLong));
  const int64_t* cnt = pc.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    TORCH_CHECK(cnt[i] >= 0 && cnt[i] <= P, "proposal_counts must lie in [0, P = ", P,
                "], got ", *proposal_counts);
  }
  const at::Tensor lg = class_logits.contiguous();
  const at::Tensor rg = box_regression.contiguous();
  const at::Tensor pr = proposals.to(class_logits.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, class_logits.scalar_type(),
                                  "detection_postprocess_cpu", [&] {
    detection_cpu_impl<scalar_t>(s, lg, rg, pr, cnt, sz, weights, bbox_xform_clip, score_thresh,
                                 nms_thresh, D, boxes, scores, labels, counts, index);
  });
  return {boxes, scores, labels, counts, index};
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) {
  m.impl("detection_postprocess", &detection_postprocess_cpu);
}

}  // namespace maskrcnn_fast

#pragma GCC pop_options
