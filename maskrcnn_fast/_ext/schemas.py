"""Every schema of torch.ops.maskrcnn_fast, written once: the op registry.

setup.py turns this list into the C++ definitions of csrc/ops.cpp (through a generated
include, so the compiled extensions _C and _C_emu define exactly these), and
maskrcnn_fast/_ext/fallback.py defines the same schemas from Python when _C is not loaded.
tests/test_op_registry.py fails when a schema is written anywhere else in the source tree or
when _C registers a different set.

Adding an op: one entry here (its documentation as a comment above it), its kernels
(csrc/cpu/<op>_kernel.cpp, csrc/cuda/<op>_kernel.cu), its wrapper with fake kernel and autograd
(maskrcnn_fast/ops/<op>.py), its reference (maskrcnn_fast/ops/reference/<op>.py) and, when the
reference does not take the schema's arguments as they come, an adapter in fallback.py.

This module is read by setup.py without importing the package (no torch): keep it plain data.
"""

SCHEMAS = (
    # Anchors of all FPN levels, one launch: cell_anchors [sum A_l, 4] (levels concatenated),
    # num_cell_anchors [A_l], grid_sizes and strides flattened (h, w) pairs per level.
    # Returns [sum_l H_l * W_l * A_l, 4]: per level, per location (y-major), per cell anchor.
    "grid_anchors(Tensor cell_anchors, int[] num_cell_anchors, SymInt[] grid_sizes, "
    "SymInt[] strides) -> Tensor",
    # rel_codes [K, 4 * C] against boxes [K, 4] -> [K, 4 * C]; clipped to image_size (h, w)
    # when given.
    "decode_boxes(Tensor rel_codes, Tensor boxes, float[] weights, float bbox_xform_clip, "
    "SymInt[]? image_size=None) -> Tensor",
    # Regression targets [K, 4] of proposals [K, 4] towards reference_boxes [K, 4].
    "encode_boxes(Tensor reference_boxes, Tensor proposals, float[] weights) -> Tensor",
    # Indices (int64) of the kept boxes, in descending score order; the size depends on the data.
    "nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor",
    # Boxes of different idxs never suppress each other; one segmented pass, no offset trick.
    "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor",
    # ROIAlign (Mask R-CNN): input [N, C, H, W], rois [K, 5] = (batch index, x1, y1, x2, y2)
    # in input pixels -> [K, C, pooled_height, pooled_width]. torchvision.ops.roi_align's schema.
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    # Gradient with respect to input, [batch_size, channels, height, width].
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    # One launch over the ROIs of every level: rois [K, 5] (batch index, x1, y1, x2, y2); each
    # ROI picks its FPN level (k_min/k_max from the scales) inside the kernel.
    "multilevel_roi_align(Tensor[] features, Tensor rois, float[] scales, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned, int canonical_scale, "
    "int canonical_level, float eps) -> Tensor",
    # One gradient per level, Tensor[batch_size, channels, heights[l], widths[l]].
    "_multilevel_roi_align_backward(Tensor grad, Tensor rois, float[] scales, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned, "
    "int canonical_scale, int canonical_level, float eps, SymInt batch_size, SymInt channels, "
    "SymInt[] heights, SymInt[] widths) -> Tensor[]",
    # masks [N, M, M] (or [N, 1, M, M]), boxes [N, 4] in output pixels, image_index [N] int64
    # (None: all in image 0), image_sizes [B, 2] int64 (h, w) (None: every image is
    # out_height x out_width). Returns [N, out_height, out_width]: masks' dtype, or uint8
    # (probability > threshold) when a threshold is given. Pixels outside a mask's own image
    # are 0, so the shape depends on the arguments only.
    "paste_masks(Tensor masks, Tensor boxes, Tensor? image_index, Tensor? image_sizes, "
    "SymInt out_height, SymInt out_width, int padding=1, float? threshold=None) -> Tensor",
    # torchvision's RPN proposal filtering for all images and levels at once. Per level l:
    # objectness [N, A, H, W] logits and pred_bbox_deltas [N, 4A, H, W] as the RPN head gives
    # them, cell_anchors [A, 4], strides flattened (h, w) pairs; image_sizes [N, 2] (h, w).
    # Returns boxes [N, post_nms_top_n, 4], scores [N, post_nms_top_n] (probabilities) and
    # counts [N] (int64): the first counts[i] rows of image i are torchvision's proposals, in
    # order; the rest are zero.
    "rpn_proposals(Tensor[] objectness, Tensor[] pred_bbox_deltas, Tensor[] cell_anchors, "
    "SymInt[] strides, Tensor image_sizes, int pre_nms_top_n, SymInt post_nms_top_n, "
    "float nms_thresh, float min_size, float score_thresh) -> (Tensor, Tensor, Tensor)",
    # torchvision's RoIHeads.postprocess_detections for all images at once. proposals [N, P, 4]
    # (padded, as rpn_proposals returns them) with proposal_counts [N] valid rows each (None:
    # all P); class_logits [N * P, C] and box_regression [N * P, 4C] in the same row order;
    # image_sizes [N, 2] (h, w). Returns boxes [N, D, 4], scores [N, D], labels [N, D] (int64),
    # counts [N] (int64) and the class_logits row of each detection [N, D] (int64), for
    # D = detections_per_img: the first counts[i] rows of image i are torchvision's detections,
    # in order; the rest are zero.
    "detection_postprocess(Tensor class_logits, Tensor box_regression, Tensor proposals, "
    "Tensor? proposal_counts, Tensor image_sizes, float[] weights, float bbox_xform_clip, "
    "float score_thresh, float nms_thresh, SymInt detections_per_img) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    # IoU of boxes1 [M, 4] against boxes2 [N, 4] (x1, y1, x2, y2) -> [M, N], torchvision's
    # box_iou; float for half/bfloat16 boxes (torchvision upcasts them).
    "box_iou(Tensor boxes1, Tensor boxes2) -> Tensor",
    # torchvision's Matcher(high, low, allow_low_quality_matches)(box_iou(gt_i, boxes_i)) for
    # every image at once, the IoU matrix never stored. gt_boxes [N, G, 4] padded, gt_counts [N]
    # (int64) valid rows each; boxes [N, T, 4], or [T, 4] shared by every image; box_counts [N]
    # (int64, None: all T) valid rows each. Returns int64 [N, T]: the matched gt index, -1 below
    # low_threshold (also padding rows and images without gt), -2 between the thresholds.
    "match_boxes(Tensor gt_boxes, Tensor gt_counts, Tensor boxes, Tensor? box_counts, "
    "float high_threshold, float low_threshold, bool allow_low_quality_matches) -> Tensor",
    # Mask R-CNN's mask targets (torchvision's project_masks_on_boxes) for the proposals of all
    # images at once, read from the uint8/bool masks without a float copy. masks[i] [G_i, H_i,
    # W_i] (image i's ground truth; images may differ in size), boxes [K, 4] (x1, y1, x2, y2 in
    # input pixels), image_index [K] and matched_index [K] int64 (the image of each box and the
    # mask within it). Returns boxes' dtype [K, size, size]: roi_align(masks[image_index][:,
    # None].to(boxes.dtype), ..., (size, size), 1.0, -1, False) of each box.
    "mask_targets(Tensor[] masks, Tensor boxes, Tensor image_index, Tensor matched_index, "
    "SymInt size) -> Tensor",
    # mask_targets from packed instance masks, the nearest resize of the masks folded in:
    # data uint8/bool [D] (each instance's crop, row-major height x width bytes), instances
    # int64 [N, 9] rows (offset into data, x0, y0, width, height, H, W, H', W'): the crop in its
    # H x W source frame, resized to H' x W' by torch's nearest rule; boxes [K, 4] (x1, y1, x2,
    # y2 in the resized frame), instance_index [K] int64 (the row of each box). Returns boxes'
    # dtype [K, size, size]: bitwise mask_targets of the dense resized masks.
    "packed_mask_targets(Tensor data, Tensor instances, Tensor boxes, Tensor instance_index, "
    "SymInt size) -> Tensor",
)


def op_name(schema: str) -> str:
    """The op's name: the schema's text before its argument list."""
    return schema.split("(", 1)[0]
