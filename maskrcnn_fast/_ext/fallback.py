"""torch.ops.maskrcnn_fast without the compiled extension: every schema of the op registry
(schemas.py), defined from Python, with the pure-PyTorch reference (maskrcnn_fast.ops.reference)
as its CPU and CUDA kernel.

Used by ``import maskrcnn_fast`` when ``_C`` cannot be loaded (or MASKRCNN_FAST_NO_EXT=1). The
fake kernels and autograd formulas of maskrcnn_fast/ops/*.py then register on these
definitions exactly as on _C's, so the wrappers, the model, autograd and torch.compile work
unchanged, on the reference's speed. tests/test_fallback.py checks that every op gives _C's
results.

Adding an op: its schema in schemas.py; nothing here when the reference function of the op's
name takes the schema's arguments as they come, else a small adapter in _ADAPTERS.

The one module of this room that reaches up: its kernels are the reference implementations of
maskrcnn_fast.ops, imported late (after the definitions exist, since importing maskrcnn_fast.ops
registers fake kernels on them).
"""
import contextlib

import torch

from .schemas import SCHEMAS, op_name

__all__ = ["KERNELS", "register"]

_NS = "maskrcnn_fast"
_LIB = None  # the torch.library.Library holding the definitions; alive as long as the process


def _ref():
    # Late: the reference modules live under maskrcnn_fast.ops, whose wrappers register fake
    # kernels on the ops, so they are imported only after the definitions below exist.
    from ..ops import reference

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


def _mask_targets(masks, boxes, image_index, matched_index, size):
    return _ref().mask_targets(list(masks), boxes, matched_index, size, image_index=image_index)


# The ops whose reference function does not take the schema's arguments as they come.
_ADAPTERS = {
    "grid_anchors": _grid_anchors,
    "roi_align": _roi_align,
    "_roi_align_backward": _roi_align_backward,
    "multilevel_roi_align": _multilevel_roi_align,
    "_multilevel_roi_align_backward": _multilevel_roi_align_backward,
    "paste_masks": _paste_masks,
    "rpn_proposals": _rpn_proposals,
    "mask_targets": _mask_targets,
}
# Op name -> its CPU and CUDA kernel, for every op of the registry.
KERNELS = {op_name(s): _ADAPTERS.get(op_name(s)) or _same(op_name(s)) for s in SCHEMAS}


def register():
    """Defines every op of the registry (SCHEMAS) in torch.ops.maskrcnn_fast with its reference
    kernel on CPU and CUDA. Call once, before maskrcnn_fast.ops is imported, and only when _C is
    not loaded."""
    global _LIB
    if _LIB is not None:
        return
    lib = torch.library.Library(_NS, "DEF")
    for schema in SCHEMAS:
        name = lib.define(schema)
        for key in ("CPU", "CUDA"):
            lib.impl(name, KERNELS[op_name(schema)], key)
    _LIB = lib
