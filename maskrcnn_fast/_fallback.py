"""torch.ops.maskrcnn_fast without the compiled extension: every schema of csrc/ops.cpp, defined
from Python, with the pure-PyTorch reference (maskrcnn_fast.ops.reference) as its CPU and CUDA
kernel.

Used by ``import maskrcnn_fast`` when ``_C`` cannot be loaded (or MASKRCNN_FAST_NO_EXT=1). The
fake kernels and autograd formulas of maskrcnn_fast/ops/*.py then register on these
definitions exactly as on _C's, so the wrappers, the model, autograd and torch.compile work
unchanged, on the reference's speed. tests/test_fallback.py checks that KERNELS' schemas equal
those _C registers, and that every op gives _C's results.

Adding an op: one entry in KERNELS, its schema as csrc/ops.cpp writes it and its kernel;
``_same("name")`` when the reference function of that name takes the schema's arguments as they
come, else a small adapter below.
"""
import contextlib

import torch

__all__ = ["KERNELS", "register"]

_NS = "maskrcnn_fast"
_LIB = None  # the torch.library.Library holding the definitions; alive as long as the process


def _ref():
    # Late: the reference modules live under maskrcnn_fast.ops, whose wrappers register fake
    # kernels on the ops, so they are imported only after the definitions below exist.
    from .ops import reference

    return reference


def _same(name):
    def kernel(*args):
        return getattr(_ref(), name)(*args)

    kernel.__name__ = f"{name}_reference"
    return kernel


def _pairs(flat):
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _memory_format(t):
    # The kernels return channels_last for channels_last input (see ops/roi_align.py).
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _recording(stack):
    """Enters a context in which autograd records, even inside a kernel that runs below the
    autograd dispatch keys (an op with register_autograd excludes them while its kernel runs);
    the autocast exclusions stay."""
    stack.enter_context(torch.enable_grad())
    guard = getattr(torch._C, "_ForceDispatchKeyGuard", None)
    if guard is not None:
        keys, keyset = torch._C.DispatchKey, torch._C.DispatchKeySet
        autograd = (keyset(keys.AutogradFunctionality) | keyset(keys.AutogradOther)
                    | keyset(keys.AutogradNestedTensor))
        stack.enter_context(guard(torch._C._dispatch_tls_local_include_set(),
                                  torch._C._dispatch_tls_local_exclude_set() - autograd))


def _vjp(forward, shapes, like, grad):
    """Gradients of forward(*inputs) with respect to zero inputs of the given shapes, for the
    output gradient grad: the backward of a map that is linear in those inputs."""
    inputs = [like.new_zeros(s).requires_grad_() for s in shapes]
    with contextlib.ExitStack() as stack:
        _recording(stack)
        out = forward(*inputs)
        grads = torch.autograd.grad(out, inputs, grad, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g.detach() for x, g in zip(inputs, grads)]


def _grid_anchors(cell_anchors, num_cell_anchors, grid_sizes, strides):
    if not num_cell_anchors:
        return cell_anchors.new_empty((0, 4))
    levels = list(cell_anchors.split(list(num_cell_anchors)))
    return _ref().grid_anchors(levels, _pairs(grid_sizes), _pairs(strides))


def _roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    out = _ref().roi_align(input, rois, (pooled_height, pooled_width), spatial_scale,
                           sampling_ratio, aligned)
    return out.contiguous(memory_format=_memory_format(input))


def _roi_align_backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                        channels, height, width, sampling_ratio, aligned):
    def forward(x):
        return _ref().roi_align(x, rois, (pooled_height, pooled_width), spatial_scale,
                                sampling_ratio, aligned)

    (g,) = _vjp(forward, [(batch_size, channels, height, width)], grad, grad)
    return g.contiguous(memory_format=_memory_format(grad))


def _multilevel_roi_align(features, rois, scales, pooled_height, pooled_width, sampling_ratio,
                          aligned, canonical_scale, canonical_level, eps):
    return _ref().multilevel_roi_align(list(features), rois, (pooled_height, pooled_width),
                                       list(scales), sampling_ratio, aligned, canonical_scale,
                                       canonical_level, eps)


def _multilevel_roi_align_backward(grad, rois, scales, pooled_height, pooled_width,
                                   sampling_ratio, aligned, canonical_scale, canonical_level, eps,
                                   batch_size, channels, heights, widths):
    def forward(*features):
        return _multilevel_roi_align(features, rois, scales, pooled_height, pooled_width,
                                     sampling_ratio, aligned, canonical_scale, canonical_level,
                                     eps)

    shapes = [(batch_size, channels, h, w) for h, w in zip(heights, widths)]
    return _vjp(forward, shapes, grad, grad)


def _paste_masks(masks, boxes, image_index, image_sizes, out_height, out_width, padding=1,
                 threshold=None):
    ref = _ref()
    if image_sizes is None:
        out = ref.paste_masks(masks, boxes, (out_height, out_width), padding, threshold)
    else:
        out = ref.paste_masks_batched(masks, boxes, image_index, image_sizes, padding, threshold,
                                      (out_height, out_width))
    return out[:, 0]


def _rpn_proposals(objectness, pred_bbox_deltas, cell_anchors, strides, image_sizes,
                   pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh):
    return _ref().rpn_proposals(list(objectness), list(pred_bbox_deltas), list(cell_anchors),
                                _pairs(strides), image_sizes, pre_nms_top_n, post_nms_top_n,
                                nms_thresh, min_size, score_thresh)


# Schema (exactly as csrc/ops.cpp defines it, without the namespace) -> CPU and CUDA kernel.
def _mask_targets(masks, boxes, image_index, matched_index, size):
    return _ref().mask_targets(list(masks), boxes, matched_index, size, image_index=image_index)


KERNELS = {
    "grid_anchors(Tensor cell_anchors, int[] num_cell_anchors, SymInt[] grid_sizes, "
    "SymInt[] strides) -> Tensor": _grid_anchors,
    "decode_boxes(Tensor rel_codes, Tensor boxes, float[] weights, float bbox_xform_clip, "
    "SymInt[]? image_size=None) -> Tensor": _same("decode_boxes"),
    "encode_boxes(Tensor reference_boxes, Tensor proposals, float[] weights) -> Tensor":
        _same("encode_boxes"),
    "nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor": _same("nms"),
    "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor":
        _same("batched_nms"),
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor": _roi_align,
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
    "int sampling_ratio, bool aligned) -> Tensor": _roi_align_backward,
    "multilevel_roi_align(Tensor[] features, Tensor rois, float[] scales, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned, int canonical_scale, "
    "int canonical_level, float eps) -> Tensor": _multilevel_roi_align,
    "_multilevel_roi_align_backward(Tensor grad, Tensor rois, float[] scales, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned, "
    "int canonical_scale, int canonical_level, float eps, SymInt batch_size, SymInt channels, "
    "SymInt[] heights, SymInt[] widths) -> Tensor[]": _multilevel_roi_align_backward,
    "paste_masks(Tensor masks, Tensor boxes, Tensor? image_index, Tensor? image_sizes, "
    "SymInt out_height, SymInt out_width, int padding=1, float? threshold=None) -> Tensor":
        _paste_masks,
    "rpn_proposals(Tensor[] objectness, Tensor[] pred_bbox_deltas, Tensor[] cell_anchors, "
    "SymInt[] strides, Tensor image_sizes, int pre_nms_top_n, SymInt post_nms_top_n, "
    "float nms_thresh, float min_size, float score_thresh) -> (Tensor, Tensor, Tensor)":
        _rpn_proposals,
    "detection_postprocess(Tensor class_logits, Tensor box_regression, Tensor proposals, "
    "Tensor? proposal_counts, Tensor image_sizes, float[] weights, float bbox_xform_clip, "
    "float score_thresh, float nms_thresh, SymInt detections_per_img) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)": _same("detection_postprocess"),
    "box_iou(Tensor boxes1, Tensor boxes2) -> Tensor": _same("box_iou"),
    "match_boxes(Tensor gt_boxes, Tensor gt_counts, Tensor boxes, Tensor? box_counts, "
    "float high_threshold, float low_threshold, bool allow_low_quality_matches) -> Tensor":
        _same("match_boxes"),
    "mask_targets(Tensor[] masks, Tensor boxes, Tensor image_index, Tensor matched_index, "
    "SymInt size) -> Tensor": _mask_targets,
}


def register():
    """Defines every op of KERNELS in torch.ops.maskrcnn_fast with its reference kernel on CPU
    and CUDA. Call once, before maskrcnn_fast.ops is imported, and only when _C is not loaded."""
    global _LIB
    if _LIB is not None:
        return
    lib = torch.library.Library(_NS, "DEF")
    for schema, kernel in KERNELS.items():
        name = lib.define(schema)
        for key in ("CPU", "CUDA"):
            lib.impl(name, kernel, key)
    _LIB = lib
