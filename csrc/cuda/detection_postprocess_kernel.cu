// detection_postprocess on CUDA, with no host synchronisation (capturable in a CUDA graph).
//
// 1. One thread per ROI: softmax and, for the classes above score_thresh, decode, clip and size
//    test (common/detection_postprocess_math.h, the CPU kernel's arithmetic). Every
//    (ROI, class >= 1) slot gets a key (probability, or -1) and a category (image * C + class,
//    or -1 when filtered).
// 2. Sort by descending key (stable), then stably by category: each (image, class) is a
//    contiguous segment in score order and the filtered slots (category -1) come first, in no
//    segment, so the segmented NMS of cuda/nms_impl.cuh never touches them.
// 3. Per image, a stable descending sort of (kept ? probability : -1) over its slots gives the
//    top detections in the CPU kernel's order; a last kernel writes the padded outputs.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "cuda/launch.cuh"

#include "common/box_coder_checks.h"
#include "common/detection_postprocess_checks.h"
#include "common/detection_postprocess_math.h"
#include "cuda/nms_impl.cuh"

namespace maskrcnn_fast {
namespace {

// Mask words per box of the NMS: classes of up to 1024 candidates per image are resolved from
// the mask alone (larger ones test far boxes directly); 128 bytes per slot.
constexpr int64_t kDetectionBand = 16;

template <typename scalar_t, typename T>
__global__ void detection_candidates_kernel(
    const scalar_t* __restrict__ logits, const scalar_t* __restrict__ reg,
    const scalar_t* __restrict__ props, const int64_t* __restrict__ counts,
    const int64_t* __restrict__ sizes, int64_t N, int64_t P, int64_t C, DecodeParams<T> base,
    T thr, T min_size, scalar_t* __restrict__ boxes, scalar_t* __restrict__ key,
    int64_t* __restrict__ cat) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < N * P;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = r / P, p = r - n * P;
    // Out-of-range counts are clamped (the CPU kernel raises): no slot past P is read.
    const bool live = counts == nullptr || p < counts[n];
    const scalar_t* row = logits + r * C;
    SoftmaxStats<T> st{T(0), T(1)};
    if (live) st = softmax_stats<scalar_t, T>(row, C);
    DecodeParams<T> dp = base;
    set_image_size<scalar_t, T>(dp, sizes[2 * n], sizes[2 * n + 1]);
    const scalar_t* b = props + 4 * r;
    const BoxFrame<T> frame = box_frame<T>(b[0], b[1], b[2], b[3]);
    const scalar_t zero = static_cast<scalar_t>(0);
    for (int64_t c = 1; c < C; ++c) {
      const int64_t q = r * (C - 1) + c - 1;
      scalar_t* bq = boxes + 4 * q;
      bool ok = false;
      scalar_t pc = zero;
      if (live) {
        pc = softmax_prob<scalar_t, T>(row[c], st);
        if (static_cast<T>(pc) > thr) {
          ok = detection_box<scalar_t, T>(frame, reg + r * 4 * C + 4 * c, dp, min_size, bq);
        }
      }
      if (!ok) {
        for (int i = 0; i < 4; ++i) bq[i] = zero;
      }
      key[q] = ok ? pc : static_cast<scalar_t>(-1);
      cat[q] = ok ? n * C + c : int64_t(-1);
    }
  }
}

template <typename scalar_t>
__global__ void detection_output_kernel(const scalar_t* __restrict__ boxes,
                                        const scalar_t* __restrict__ key,
                                        const int64_t* __restrict__ order,
                                        const int64_t* __restrict__ count, int64_t N, int64_t P,
                                        int64_t C, int64_t D, scalar_t* __restrict__ out_boxes,
                                        scalar_t* __restrict__ out_scores,
                                        int64_t* __restrict__ out_labels,
                                        int64_t* __restrict__ out_index) {
  const int64_t M = P * (C - 1);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N * D;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / D, j = i - n * D;
    if (j < count[n]) {
      const int64_t q = order[n * M + j];
      const int64_t src = n * M + q;
      for (int c = 0; c < 4; ++c) out_boxes[4 * i + c] = boxes[4 * src + c];
      out_scores[i] = key[src];
      out_labels[i] = q % (C - 1) + 1;
      out_index[i] = n * P + q / (C - 1);
    } else {
      const scalar_t zero = static_cast<scalar_t>(0);
      for (int c = 0; c < 4; ++c) out_boxes[4 * i + c] = zero;
      out_scores[i] = zero;
      out_labels[i] = 0;
      out_index[i] = 0;
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> detection_postprocess_cuda(
    const at::Tensor& class_logits, const at::Tensor& box_regression, const at::Tensor& proposals,
    const c10::optional<at::Tensor>& proposal_counts, const at::Tensor& image_sizes,
    at::ArrayRef<double> weights, double bbox_xform_clip, double score_thresh, double nms_thresh,
    int64_t detections_per_img) {
  const DetectionShape s = check_detection_postprocess(
      class_logits, box_regression, proposals, proposal_counts, image_sizes, weights,
      bbox_xform_clip, score_thresh, nms_thresh, detections_per_img);
  DeviceGuard guard(class_logits.device());
  const int64_t N = s.num_images, P = s.num_proposals, C = s.num_classes, D = detections_per_img;
  const int64_t M = P * (C - 1);
  const auto opts = class_logits.options();
  at::Tensor out_boxes = at::empty({N, D, 4}, opts);
  at::Tensor out_scores = at::empty({N, D}, opts);
  at::Tensor out_labels = at::empty({N, D}, opts.dtype(at::kLong));
  at::Tensor out_index = at::empty({N, D}, opts.dtype(at::kLong));
  if (N == 0 || M == 0 || D == 0) {
    out_boxes.zero_();
    out_scores.zero_();
    out_labels.zero_();
    out_index.zero_();
    return {out_boxes, out_scores, out_labels, at::zeros({N}, opts.dtype(at::kLong)), out_index};
  }
  TORCH_CHECK(N * M <= kMaxNmsBoxes,
              "detection_postprocess: at most 2^30 (image, proposal, class) candidates in all, got ",
              N * M);
  const auto stream = current_stream();
  const at::Tensor sizes = image_sizes.to(at::kLong).contiguous();
  at::Tensor pc;
  if (proposal_counts.has_value()) pc = proposal_counts->to(at::kLong).contiguous();
  const at::Tensor lg = class_logits.contiguous();
  const at::Tensor rg = box_regression.contiguous();
  const at::Tensor pr = proposals.to(class_logits.scalar_type()).contiguous();

  at::Tensor boxes = at::empty({N * M, 4}, opts);
  at::Tensor key = at::empty({N * M}, opts);
  at::Tensor cat = at::empty({N * M}, opts.dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, class_logits.scalar_type(),
                                  "detection_postprocess_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const DecodeParams<T> base = make_decode_params<scalar_t, T>(weights, bbox_xform_clip, {});
    launch(detection_candidates_kernel<scalar_t, T>, grid_for(N * P, 128), 128, stream,
           lg.const_data_ptr<scalar_t>(), rg.const_data_ptr<scalar_t>(),
           pr.const_data_ptr<scalar_t>(), pc.defined() ? pc.const_data_ptr<int64_t>() : nullptr,
           sizes.const_data_ptr<int64_t>(), N, P, C, base,
           static_cast<T>(static_cast<scalar_t>(score_thresh)),
           static_cast<T>(static_cast<scalar_t>(1e-2)), boxes.mutable_data_ptr<scalar_t>(),
           key.mutable_data_ptr<scalar_t>(), cat.mutable_data_ptr<int64_t>());
  });

  const at::Tensor by_score =
      std::get<1>(canonical_nan(key).sort(/*stable=*/true, 0, /*descending=*/true));
  const auto cat_sort = cat.index_select(0, by_score).sort(/*stable=*/true, 0, false);
  const at::Tensor& cat_sorted = std::get<0>(cat_sort);
  const at::Tensor order = by_score.index_select(0, std::get<1>(cat_sort));
  const at::Tensor keep_sorted =
      segmented_keep(boxes, order, cat_sorted, nms_thresh, kDetectionBand);
  at::Tensor keep = at::zeros({N * M}, opts.dtype(at::kBool));
  keep.index_copy_(0, order, keep_sorted.to(at::kBool));
  const at::Tensor final_key =
      at::where(keep, key, at::scalar_tensor(-1, opts)).view({N, M});
  const at::Tensor top =
      std::get<1>(canonical_nan(final_key).sort(/*stable=*/true, /*dim=*/1, /*descending=*/true))
          .contiguous();
  const at::Tensor counts = final_key.ge(0).sum(1).clamp_max(D).contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, class_logits.scalar_type(),
                                  "detection_postprocess_cuda_out", [&] {
    launch(detection_output_kernel<scalar_t>, grid_for(N * D, kThreads), kThreads, stream,
           boxes.const_data_ptr<scalar_t>(), key.const_data_ptr<scalar_t>(),
           top.const_data_ptr<int64_t>(), counts.const_data_ptr<int64_t>(), N, P, C, D,
           out_boxes.mutable_data_ptr<scalar_t>(), out_scores.mutable_data_ptr<scalar_t>(),
           out_labels.mutable_data_ptr<int64_t>(), out_index.mutable_data_ptr<int64_t>());
  });
  return {out_boxes, out_scores, out_labels, counts, out_index};
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("detection_postprocess", &detection_postprocess_cuda);
}

}  // namespace maskrcnn_fast
