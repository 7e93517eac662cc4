// rpn_proposals on CUDA, with no host synchronisation (capturable in a CUDA graph).
//
// 1. Per level, at::topk of the logits of all images at once ([N, A * H * W] -> [N, k_l]).
// 2. One kernel over (image, candidate): the anchor from (level, y, x, a), decode, clip, filters
//    (common/rpn_proposals_math.h, the CPU kernel's arithmetic). A candidate that fails a filter
//    gets NaN coordinates for the NMS (a NaN box neither suppresses nor is suppressed) and key -1.
// 3. Segmented NMS (cuda/nms_impl.cuh) with one segment per (image, level): the candidates are
//    already in score order within a segment, and the segments are contiguous.
// 4. Per image, a stable descending sort of (kept ? probability : -1) gives the post-NMS top-n
//    in the CPU kernel's order; a last kernel writes the padded outputs from the device count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cuda/launch.cuh"

#include "common/rpn_proposals_checks.h"
#include "common/rpn_proposals_math.h"
#include "cuda/nms_impl.cuh"

namespace maskrcnn_fast {
namespace {

template <typename scalar_t>
struct RpnPointers {
  const scalar_t* deltas[kMaxAnchorLevels];  // [N, 4A, H, W]
  const scalar_t* cells[kMaxAnchorLevels];   // [A, 4]
  const scalar_t* logits[kMaxAnchorLevels];  // top-k values [N, k]
  const int64_t* index[kMaxAnchorLevels];    // top-k indices [N, k] into [A, H, W]
};

template <typename scalar_t, typename T>
__global__ void rpn_candidates_kernel(RpnLayout layout, RpnPointers<scalar_t> ptrs,
                                      const int64_t* __restrict__ sizes, T xform_clip,
                                      RpnFilter<T> filter, scalar_t* __restrict__ boxes,
                                      scalar_t* __restrict__ key, int64_t* __restrict__ cat) {
  const int64_t K = layout.num_candidates;
  const int64_t total = layout.num_images * K;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / K, j = i - n * K;
    const int l = rpn_level_of(layout, j);
    const RpnLevel& lv = layout.level[l];
    const int64_t r = j - lv.cand_begin;
    const int64_t hw = lv.height * lv.width;
    const int64_t idx = ptrs.index[l][n * lv.k + r];
    const scalar_t logit = ptrs.logits[l][n * lv.k + r];
    const DecodeParams<T> p =
        rpn_decode_params<scalar_t, T>(xform_clip, sizes[2 * n], sizes[2 * n + 1]);
    scalar_t box[4];
    scalar_t prob;
    const bool ok = rpn_candidate<scalar_t, T>(
        lv, ptrs.deltas[l] + n * 4 * lv.num_anchors * hw, ptrs.cells[l], idx, logit, p, filter,
        box, &prob);
    const scalar_t nan = static_cast<scalar_t>(NAN);
    for (int c = 0; c < 4; ++c) boxes[4 * i + c] = ok ? box[c] : nan;
    key[i] = ok ? prob : static_cast<scalar_t>(-1);
    cat[i] = n * layout.num_levels + l;
  }
}

// Row j < count[n] of image n: candidate order[n, j]; the rest zero.
template <typename scalar_t>
__global__ void rpn_output_kernel(const scalar_t* __restrict__ boxes,
                                  const scalar_t* __restrict__ key,
                                  const int64_t* __restrict__ order,
                                  const int64_t* __restrict__ count, int64_t N, int64_t K,
                                  int64_t post, scalar_t* __restrict__ out_boxes,
                                  scalar_t* __restrict__ out_scores) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N * post;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / post, j = i - n * post;
    const scalar_t zero = static_cast<scalar_t>(0);
    if (j < count[n]) {
      const int64_t src = n * K + order[n * K + j];
      for (int c = 0; c < 4; ++c) out_boxes[4 * i + c] = boxes[4 * src + c];
      out_scores[i] = key[src];
    } else {
      for (int c = 0; c < 4; ++c) out_boxes[4 * i + c] = zero;
      out_scores[i] = zero;
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rpn_proposals_cuda(
    at::TensorList objectness, at::TensorList pred_bbox_deltas, at::TensorList cell_anchors,
    at::IntArrayRef strides, const at::Tensor& image_sizes, int64_t pre_nms_top_n,
    int64_t post_nms_top_n, double nms_thresh, double min_size, double score_thresh) {
  const RpnLayout layout =
      check_rpn_proposals(objectness, pred_bbox_deltas, cell_anchors, strides, image_sizes,
                          pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh);
  DeviceGuard guard(objectness[0].device());
  const int64_t N = layout.num_images, K = layout.num_candidates, L = layout.num_levels;
  const auto opts = objectness[0].options();
  at::Tensor out_boxes = at::empty({N, post_nms_top_n, 4}, opts);
  at::Tensor out_scores = at::empty({N, post_nms_top_n}, opts);
  if (N == 0 || post_nms_top_n == 0 || K == 0) {
    out_boxes.zero_();
    out_scores.zero_();
    return {out_boxes, out_scores, at::zeros({N}, opts.dtype(at::kLong))};
  }
  TORCH_CHECK(N * K <= kMaxNmsBoxes,
              "rpn_proposals: at most 2^30 candidates in all (N * pre_nms_top_n * levels), got ",
              N * K);
  const auto stream = current_stream();
  const at::Tensor sizes = image_sizes.to(at::kLong).contiguous();

  std::vector<at::Tensor> keep_alive;
  at::Tensor boxes = at::empty({N * K, 4}, opts);
  at::Tensor key = at::empty({N * K}, opts);
  at::Tensor cat = at::empty({N * K}, opts.dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, opts.dtype().toScalarType(),
                                  "rpn_proposals_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    RpnPointers<scalar_t> ptrs{};
    for (int64_t l = 0; l < L; ++l) {
      const RpnLevel& lv = layout.level[l];
      // The CPU kernel's ranking: descending logit (NaN first), ties by torchvision's (y, x, a)
      // index. topk's order of ties is unspecified and it would see [A, H, W] memory order, so:
      // a stable descending sort of the logits in (y, x, a) order, NaN made canonical (a NaN
      // with its sign bit set would sort last on the GPU's radix sort).
      const int64_t A = lv.num_anchors, hw = lv.height * lv.width;
      const at::Tensor ob = canonical_nan(objectness[l].permute({0, 2, 3, 1}).reshape({N, -1}));
      auto top = ob.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true);
      const at::Tensor de = pred_bbox_deltas[l].contiguous();
      const at::Tensor ca = cell_anchors[l].to(opts.dtype()).contiguous();
      const at::Tensor values = std::get<0>(top).slice(1, 0, lv.k).contiguous();
      // Back to the kernel's [A, H, W] index: (y, x, a) -> a * H * W + (y * W + x).
      const at::Tensor yxa = std::get<1>(top).slice(1, 0, lv.k);
      const at::Tensor index = (yxa.remainder(A) * hw + yxa.div(A, "floor")).contiguous();
      ptrs.deltas[l] = de.const_data_ptr<scalar_t>();
      ptrs.cells[l] = ca.const_data_ptr<scalar_t>();
      ptrs.logits[l] = values.const_data_ptr<scalar_t>();
      ptrs.index[l] = index.const_data_ptr<int64_t>();
      keep_alive.insert(keep_alive.end(), {de, ca, values, index});
    }
    const T xform_clip = static_cast<T>(static_cast<scalar_t>(std::log(1000.0 / 16)));
    launch(rpn_candidates_kernel<scalar_t, T>, grid_for(N * K, kThreads), kThreads, stream, layout,
           ptrs, sizes.const_data_ptr<int64_t>(), xform_clip,
           make_rpn_filter<scalar_t, T>(min_size, score_thresh), boxes.mutable_data_ptr<scalar_t>(),
           key.mutable_data_ptr<scalar_t>(), cat.mutable_data_ptr<int64_t>());
  });

  const at::Tensor order = at::arange(N * K, opts.dtype(at::kLong));
  const at::Tensor keep = segmented_keep(boxes, order, cat, nms_thresh);
  const at::Tensor final_key = at::where(keep.to(at::kBool), key, at::scalar_tensor(-1, opts)).view({N, K});
  const at::Tensor by_score =
      std::get<1>(canonical_nan(final_key).sort(/*stable=*/true, /*dim=*/1, /*descending=*/true))
          .contiguous();
  const at::Tensor counts = final_key.ge(0).sum(1).clamp_max(post_nms_top_n).contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, opts.dtype().toScalarType(),
                                  "rpn_proposals_cuda_out", [&] {
    launch(rpn_output_kernel<scalar_t>, grid_for(N * post_nms_top_n, kThreads), kThreads, stream,
           boxes.const_data_ptr<scalar_t>(), key.const_data_ptr<scalar_t>(),
           by_score.const_data_ptr<int64_t>(), counts.const_data_ptr<int64_t>(), N, K,
           post_nms_top_n, out_boxes.mutable_data_ptr<scalar_t>(),
           out_scores.mutable_data_ptr<scalar_t>());
  });
  return {out_boxes, out_scores, counts};
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("rpn_proposals", &rpn_proposals_cuda);
}

}  // namespace maskrcnn_fast
