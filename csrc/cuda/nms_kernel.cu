// CUDA nms and batched_nms on the segmented machinery of cuda/nms_impl.cuh; the only host
// sync is the final masked_select, which the exact-size output needs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda/launch.cuh"

#include "common/nms_checks.h"
#include "cuda/nms_impl.cuh"

namespace maskrcnn_fast {
namespace {

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_inputs(boxes, scores, iou_threshold);
  DeviceGuard guard(boxes.device());
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const at::Tensor b = boxes.contiguous();
  const at::Tensor order =
      std::get<1>(canonical_nan(scores).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor keep = segmented_keep(b, order, at::Tensor(), iou_threshold);
  return order.masked_select(keep.to(at::kBool));
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                            const at::Tensor& idxs, double iou_threshold) {
  check_batched_nms_inputs(boxes, scores, idxs, iou_threshold);
  DeviceGuard guard(boxes.device());
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const at::Tensor b = boxes.contiguous();
  const at::Tensor by_score =
      std::get<1>(canonical_nan(scores).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const auto cat_sort = idxs.to(at::kLong).index_select(0, by_score).sort(/*stable=*/true, 0, false);
  const at::Tensor& cat = std::get<0>(cat_sort);
  const at::Tensor& by_cat = std::get<1>(cat_sort);  // positions in by_score
  const at::Tensor order = by_score.index_select(0, by_cat);
  // Any int64 is a category here, negative ones too, while segmented_keep treats a negative
  // category as "no segment" (the fused ops park filtered boxes there): number the sorted
  // categories 0, 1, 2, ... instead.
  const int64_t n = cat.size(0);
  const at::Tensor dense =
      at::cat({at::zeros({1}, cat.options()),
               cat.slice(0, 1).ne(cat.slice(0, 0, n - 1)).to(at::kLong)})
          .cumsum(0);
  const at::Tensor keep = segmented_keep(b, order, dense, iou_threshold);
  // Back to score order: keep_by_score[by_cat[q]] = keep[q].
  at::Tensor keep_by_score = at::empty({b.size(0)}, b.options().dtype(at::kBool));
  keep_by_score.index_copy_(0, by_cat, keep.to(at::kBool));
  return by_score.masked_select(keep_by_score);
}

}  // namespace

MF_CUDA_LIBRARY_IMPL(m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace maskrcnn_fast
