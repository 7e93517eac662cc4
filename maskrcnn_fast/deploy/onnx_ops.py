"""Our ops in standard ONNX operators (opset 18, no custom domain), for torch.onnx.export's
``custom_translation_table``: each function is traced by onnxscript into ONNX nodes.

rpn_proposals and detection_postprocess become TopK, decode arithmetic, NonMaxSuppression (one
NMS "batch" per image and level, or per image and class, so that boxes never suppress across
them: exact per-class NMS, no offset trick) and a TopK over the kept scores for the padded
outputs; multilevel_roi_align becomes one RoiAlign per FPN level on the ROIs of that level
(NonZero, Gather, ScatterND); paste_masks becomes two batched MatMuls with the bilinear weights
of each box. float32 only (ONNX Runtime's NMS and RoiAlign are float32).
"""
import math
from typing import Optional, Sequence

import numpy as np
import onnx_ir as ir
import torch
from onnxscript import opset18 as op

__all__ = ["TRANSLATIONS", "OPSET", "rpn_proposals", "detection_postprocess", "multilevel_roi_align",
           "paste_masks", "roi_align"]

OPSET = 18
_FLOAT, _INT64, _UINT8 = 1, 7, 2  # onnx.TensorProto data types
_SENTINEL = -1.0  # the score of a box that must not take part in an NMS (probabilities are >= 0)


def _c(values, dtype=np.float32):
    return op.Constant(value=ir.tensor(np.asarray(values, dtype=dtype)))


def _i(values):
    return _c(values, np.int64)


def _dims(x) -> list:
    """The static sizes of x (an int per dimension, None where symbolic)."""
    return [d if isinstance(d, int) else None for d in x.shape]


def _count(x):
    """x's first size as an int64 scalar."""
    return op.Squeeze(op.Shape(x, start=0, end=1), _i([0]))


def _split4(x):
    return op.Split(x, axis=-1, num_outputs=4)


def _decode(codes, boxes, weights: Sequence[float], clip: float):
    """codes [..., 4] (dx, dy, dw, dh) applied to boxes [..., 4] (broadcast), as decode_boxes:
    the same operations in the same order."""
    x1, y1, x2, y2 = _split4(boxes)
    dx, dy, dw, dh = _split4(codes)
    w = op.Sub(x2, x1)
    h = op.Sub(y2, y1)
    cx = op.Add(x1, op.Mul(_c(0.5), w))
    cy = op.Add(y1, op.Mul(_c(0.5), h))
    wx, wy, ww, wh = (_c(float(v)) for v in weights)
    ctr_x = op.Add(op.Mul(op.Div(dx, wx), w), cx)
    ctr_y = op.Add(op.Mul(op.Div(dy, wy), h), cy)
    half_w = op.Mul(_c(0.5), op.Mul(op.Exp(op.Min(op.Div(dw, ww), _c(clip))), w))
    half_h = op.Mul(_c(0.5), op.Mul(op.Exp(op.Min(op.Div(dh, wh), _c(clip))), h))
    return op.Concat(op.Sub(ctr_x, half_w), op.Sub(ctr_y, half_h), op.Add(ctr_x, half_w), op.Add(ctr_y, half_h),
                     axis=-1)


def _clip(boxes, image_sizes, rank: int):
    """boxes [N, ..., 4] (rank dims) clamped to image_sizes [N, 2] (h, w) of their image."""
    sizes = op.Cast(image_sizes, to=_FLOAT)
    shape = _i([-1] + [1] * (rank - 1))
    h = op.Reshape(op.Slice(sizes, _i([0]), _i([1]), _i([1])), shape)
    w = op.Reshape(op.Slice(sizes, _i([1]), _i([2]), _i([1])), shape)
    x1, y1, x2, y2 = _split4(boxes)
    zero = _c(0.0)
    return op.Concat(op.Min(op.Max(x1, zero), w), op.Min(op.Max(y1, zero), h),
                     op.Min(op.Max(x2, zero), w), op.Min(op.Max(y2, zero), h), axis=-1)


def _sizes(boxes):
    x1, y1, x2, y2 = _split4(boxes)
    return op.Squeeze(op.Sub(x2, x1), _i([-1])), op.Squeeze(op.Sub(y2, y1), _i([-1]))


def _padded_top(scores, keep, k: int, size: int):
    """The first ``size`` columns (decreasing score, lower index first) of the kept entries of
    scores [N, T] (keep: bool [N, T]), k = min(size, T) -> (indices [N, k] int64, scores [N,
    size] (0 past the count), counts [N] int64, valid [N, k] bool)."""
    kept = op.Where(keep, scores, _c(_SENTINEL))
    top, index = op.TopK(kept, _i([k]), axis=1, largest=1, sorted=1)
    counts = op.Min(op.ReduceSum(op.Cast(keep, to=_INT64), _i([1]), keepdims=0), _i(k))
    valid = op.Less(op.Unsqueeze(_i(np.arange(k)), _i([0])), op.Unsqueeze(counts, _i([1])))
    return index, _pad(op.Where(valid, top, _c(0.0)), size - k), counts, valid


def _pad(x, extra: int):
    """x [N, k, ...] zero-padded to [N, k + extra, ...]."""
    if extra <= 0:
        return x
    rank = len(x.shape)
    pads = [0] * rank + [0, extra] + [0] * (rank - 2)
    return op.Pad(x, _i(pads))


def _gather_rows(x, index):
    """x [N, T, ...] rows index [N, k] of each image -> [N, k, ...]."""
    return op.GatherND(x, op.Unsqueeze(index, _i([-1])), batch_dims=1)


def rpn_proposals(objectness, pred_bbox_deltas, cell_anchors, strides: Sequence[int], image_sizes,
                  pre_nms_top_n: int, post_nms_top_n: int, nms_thresh: float, min_size: float,
                  score_thresh: float):
    """-> boxes [N, post_nms_top_n, 4], scores [N, post_nms_top_n], counts [N] (see
    maskrcnn_fast.ops.rpn_proposals); the feature maps' sizes must be static."""
    boxes, logits, levels = [], [], []
    for lvl, (ob, de, cell) in enumerate(zip(objectness, pred_bbox_deltas, cell_anchors)):
        _, a, h, w = _dims(ob)
        if None in (a, h, w):
            raise ValueError("rpn_proposals: the ONNX export needs feature maps of static size")
        sh, sw = int(strides[2 * lvl]), int(strides[2 * lvl + 1])
        k = min(int(pre_nms_top_n), h * w * a)
        flat = op.Reshape(op.Transpose(ob, perm=[0, 2, 3, 1]), _i([0, -1]))
        val, idx = op.TopK(flat, _i([k]), axis=1, largest=1, sorted=1)
        codes = op.Reshape(op.Transpose(op.Reshape(de, _i([0, a, 4, h, w])), perm=[0, 3, 4, 1, 2]), _i([0, -1, 4]))
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shifts = np.stack([xs * sw, ys * sh, xs * sw, ys * sh], -1).reshape(-1, 1, 4).astype(np.float32)
        anchors = op.Reshape(op.Add(_c(shifts), op.Unsqueeze(cell, _i([0]))), _i([-1, 4]))
        boxes.append(_decode(_gather_rows(codes, idx), op.Gather(anchors, idx, axis=0), (1.0,) * 4,
                             math.log(1000.0 / 16)))
        logits.append(val)
        levels.append(np.full(k, lvl))
    total = sum(len(lv) for lv in levels)
    boxes = _clip(op.Concat(*boxes, axis=1), image_sizes, 3)  # [N, K, 4]
    probs = op.Sigmoid(op.Concat(*logits, axis=1))  # [N, K]
    ws, hs = _sizes(boxes)
    valid = op.And(op.And(op.GreaterOrEqual(ws, _c(min_size)), op.GreaterOrEqual(hs, _c(min_size))),
                   op.GreaterOrEqual(probs, _c(score_thresh)))
    # one NMS class per level: a box takes part only in its own level's
    level = np.concatenate(levels)
    one_hot = level[None, :] == np.arange(len(levels))[:, None]  # [L, K]
    nms_scores = op.Where(op.And(op.Unsqueeze(valid, _i([1])), _c(one_hot, np.bool_)),
                          op.Unsqueeze(probs, _i([1])), _c(_SENTINEL))
    selected = op.NonMaxSuppression(boxes, nms_scores, _i([total]), _c([nms_thresh]), _c([_SENTINEL / 2]))
    rows = op.Gather(selected, _i([0, 2]), axis=1)  # (image, box)
    keep = op.ScatterND(op.ConstantOfShape(op.Shape(probs), value=ir.tensor(np.zeros(1, np.float32))), rows,
                        op.ConstantOfShape(op.Shape(selected, start=0, end=1), value=ir.tensor(np.ones(1, np.float32))))
    k = min(int(post_nms_top_n), total)
    index, scores, counts, ok = _padded_top(probs, op.Greater(keep, _c(0.0)), k, int(post_nms_top_n))
    out = op.Where(op.Unsqueeze(ok, _i([-1])), _gather_rows(boxes, index), _c(0.0))
    return _pad(out, int(post_nms_top_n) - k), scores, counts


def detection_postprocess(class_logits, box_regression, proposals, proposal_counts, image_sizes,
                          weights: Sequence[float], bbox_xform_clip: float, score_thresh: float,
                          nms_thresh: float, detections_per_img: int):
    """-> boxes [N, D, 4], scores [N, D], labels [N, D], counts [N], roi_index [N, D] (see
    maskrcnn_fast.ops.detection_postprocess); P (proposals per image) and C must be static."""
    p, c = _dims(proposals)[1], _dims(class_logits)[1]
    if p is None or c is None:
        raise ValueError("detection_postprocess: the ONNX export needs static proposal and class counts")
    d = int(detections_per_img)
    scores = op.Reshape(op.Softmax(class_logits, axis=-1), _i([-1, p, c]))
    codes = op.Reshape(box_regression, _i([-1, p, c, 4]))
    dec = _decode(codes, op.Unsqueeze(proposals, _i([2])), weights, bbox_xform_clip)
    boxes = op.Slice(_clip(dec, image_sizes, 4), _i([1]), _i([c]), _i([2]))  # [N, P, C-1, 4]: no background
    scores = op.Slice(scores, _i([1]), _i([c]), _i([2]))  # [N, P, C-1]
    ws, hs = _sizes(boxes)
    valid = op.And(op.And(op.Greater(scores, _c(score_thresh)), op.GreaterOrEqual(ws, _c(1e-2))),
                   op.GreaterOrEqual(hs, _c(1e-2)))
    if proposal_counts is not None:
        real = op.Less(op.Unsqueeze(_i(np.arange(p)), _i([0])), op.Unsqueeze(proposal_counts, _i([1])))
        valid = op.And(valid, op.Unsqueeze(real, _i([2])))
    # one NMS batch per (image, class): exact per-class NMS
    nms_boxes = op.Reshape(op.Transpose(boxes, perm=[0, 2, 1, 3]), _i([-1, p, 4]))
    nms_scores = op.Reshape(op.Transpose(op.Where(valid, scores, _c(_SENTINEL)), perm=[0, 2, 1]), _i([-1, 1, p]))
    selected = op.NonMaxSuppression(nms_boxes, nms_scores, _i([p]), _c([nms_thresh]), _c([_SENTINEL / 2]))
    b = op.Gather(selected, _i([0]), axis=1)
    where = op.Concat(op.Div(b, _i(c - 1)), op.Gather(selected, _i([2]), axis=1), op.Mod(b, _i(c - 1)), axis=1)
    keep = op.ScatterND(op.ConstantOfShape(op.Shape(scores), value=ir.tensor(np.zeros(1, np.float32))), where,
                        op.ConstantOfShape(op.Shape(selected, start=0, end=1), value=ir.tensor(np.ones(1, np.float32))))
    flat_scores = op.Reshape(scores, _i([0, -1]))  # [N, P * (C-1)], proposal-major as torchvision's
    k = min(d, p * (c - 1))
    index, out_scores, counts, ok = _padded_top(flat_scores, op.Greater(op.Reshape(keep, _i([0, -1])), _c(0.0)), k, d)
    out_boxes = op.Where(op.Unsqueeze(ok, _i([-1])), _gather_rows(op.Reshape(boxes, _i([0, -1, 4])), index), _c(0.0))
    labels = op.Where(ok, op.Add(op.Mod(index, _i(c - 1)), _i(1)), _i(0))
    image = op.Unsqueeze(op.Range(_i(0), _count(proposals), _i(1)), _i([1]))
    roi = op.Where(ok, op.Add(op.Mul(image, _i(p)), op.Div(index, _i(c - 1))), _i(0))
    return (_pad(out_boxes, d - k), out_scores, _pad(labels, d - k), counts, _pad(roi, d - k))


def multilevel_roi_align(features, rois, scales: Sequence[float], pooled_height: int, pooled_width: int,
                         sampling_ratio: int, aligned: bool, canonical_scale: int, canonical_level: int,
                         eps: float):
    """-> [K, C, PH, PW]: each ROI pooled by RoiAlign from its FPN level (torchvision's
    LevelMapper in float32; log2 as ln / ln 2)."""
    mode = "half_pixel" if aligned else "output_half_pixel"
    ph, pw = int(pooled_height), int(pooled_width)
    channels = _dims(features[0])[1]
    out = op.ConstantOfShape(op.Concat(op.Shape(rois, start=0, end=1), _i([channels, ph, pw]), axis=0),
                             value=ir.tensor(np.zeros(1, np.float32)))
    if len(features) == 1:
        level = None
    else:
        _, x1, y1, x2, y2 = op.Split(rois, axis=1, num_outputs=5)
        s = op.Sqrt(op.Mul(op.Sub(x2, x1), op.Sub(y2, y1)))
        log2 = op.Div(op.Log(op.Div(s, _c(float(canonical_scale)))), _c(math.log(2.0)))
        k_min, k_max = -math.log2(scales[0]), -math.log2(scales[-1])
        lvl = op.Floor(op.Add(op.Add(_c(float(canonical_level)), log2), _c(eps)))
        level = op.Reshape(op.Sub(op.Min(op.Max(lvl, _c(k_min)), _c(k_max)), _c(k_min)), _i([-1]))
    for i, (feature, scale) in enumerate(zip(features, scales)):
        if level is None:
            sel = op.Range(_i(0), _count(rois), _i(1))
        else:
            sel = op.Reshape(op.NonZero(op.Equal(level, _c(float(i)))), _i([-1]))
        r = op.Gather(rois, sel, axis=0)
        index = op.Reshape(op.Cast(op.Slice(r, _i([0]), _i([1]), _i([1])), to=_INT64), _i([-1]))
        pooled = op.RoiAlign(feature, op.Slice(r, _i([1]), _i([5]), _i([1])), index, mode="avg",
                             output_height=ph, output_width=pw, sampling_ratio=max(int(sampling_ratio), 0),
                             spatial_scale=float(scale), coordinate_transformation_mode=mode)
        out = op.ScatterND(out, op.Unsqueeze(sel, _i([-1])), pooled)
    return out


def roi_align(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
              aligned: bool):
    """-> [K, C, PH, PW] (torchvision.ops.roi_align): one RoiAlign."""
    index = op.Reshape(op.Cast(op.Slice(rois, _i([0]), _i([1]), _i([1])), to=_INT64), _i([-1]))
    return op.RoiAlign(input, op.Slice(rois, _i([1]), _i([5]), _i([1])), index, mode="avg",
                       output_height=int(pooled_height), output_width=int(pooled_width),
                       sampling_ratio=max(int(sampling_ratio), 0), spatial_scale=float(spatial_scale),
                       coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel")


def _paste_weights(lo, hi, limit, size: int, m: int):
    """Bilinear weights [K, size, m] of the output pixels 0..size-1 along one axis, for boxes
    spanning the integer pixels lo..hi [K, 1] (truncated, grown), resized from m samples with
    PyTorch's interpolate (align_corners=False); 0 outside the box or past limit [K, 1]."""
    length = op.Max(op.Add(op.Sub(hi, lo), _i(1)), _i(1))
    step = op.Div(_c(float(m)), op.Cast(length, to=_FLOAT))  # input / output size, in float32
    pix = _i(np.arange(size)[None, :])
    src = op.Max(op.Sub(op.Mul(step, op.Add(op.Cast(op.Sub(pix, lo), to=_FLOAT), _c(0.5))), _c(0.5)), _c(0.0))
    first = op.Min(op.Cast(op.Floor(src), to=_INT64), _i(m - 1))
    frac = op.Min(op.Max(op.Sub(src, op.Cast(first, to=_FLOAT)), _c(0.0)), _c(1.0))
    second = op.Add(first, op.Cast(op.Less(first, _i(m - 1)), to=_INT64))
    inside = op.And(op.And(op.GreaterOrEqual(pix, lo), op.GreaterOrEqual(pix, _i(0))),
                    op.And(op.LessOrEqual(pix, hi), op.Less(pix, limit)))
    cols = _i(np.arange(m)[None, None, :])
    w = op.Add(op.Mul(op.Cast(op.Equal(op.Unsqueeze(first, _i([-1])), cols), to=_FLOAT),
                      op.Unsqueeze(op.Sub(_c(1.0), frac), _i([-1]))),
               op.Mul(op.Cast(op.Equal(op.Unsqueeze(second, _i([-1])), cols), to=_FLOAT), op.Unsqueeze(frac, _i([-1]))))
    return op.Mul(w, op.Unsqueeze(op.Cast(inside, to=_FLOAT), _i([-1])))


def paste_masks(masks, boxes, image_index, image_sizes, out_height: int, out_width: int, padding: int = 1,
                threshold: Optional[float] = None):
    """-> [K, out_height, out_width] (see maskrcnn_fast.ops.paste_masks): out = Wy @ mask @ Wx^T
    with each box's bilinear weights, which is the interpolate-then-place of torchvision's
    paste_masks_in_image."""
    m = _dims(masks)[-1]
    pad = int(padding)
    mp = m + 2 * pad
    x = op.Reshape(masks, _i([-1, m, m]))
    if pad:
        x = op.Pad(x, _i([0, pad, pad, 0, pad, pad]))
    scale = np.float32(float(mp) / m)
    x1, y1, x2, y2 = _split4(boxes)  # [K, 1] each
    w_half = op.Mul(op.Mul(op.Sub(x2, x1), _c(0.5)), _c(scale))
    h_half = op.Mul(op.Mul(op.Sub(y2, y1), _c(0.5)), _c(scale))
    xc = op.Mul(op.Add(x2, x1), _c(0.5))
    yc = op.Mul(op.Add(y2, y1), _c(0.5))
    bx0, bx1 = op.Cast(op.Sub(xc, w_half), to=_INT64), op.Cast(op.Add(xc, w_half), to=_INT64)
    by0, by1 = op.Cast(op.Sub(yc, h_half), to=_INT64), op.Cast(op.Add(yc, h_half), to=_INT64)
    h, w = int(out_height), int(out_width)
    if image_sizes is None:
        lim_h, lim_w = _i([[h]]), _i([[w]])
    else:
        sizes = op.Gather(image_sizes, image_index, axis=0) if image_index is not None else \
            op.Slice(image_sizes, _i([0]), _i([1]), _i([0]))
        lim_h = op.Slice(sizes, _i([0]), _i([1]), _i([1]))
        lim_w = op.Slice(sizes, _i([1]), _i([2]), _i([1]))
    wy = _paste_weights(by0, by1, lim_h, h, mp)  # [K, H, mp]
    wx = _paste_weights(bx0, bx1, lim_w, w, mp)  # [K, W, mp]
    # horizontal first, then vertical: interpolate's order of the two lerps
    out = op.MatMul(wy, op.MatMul(x, op.Transpose(wx, perm=[0, 2, 1])))
    if threshold is not None:
        return op.Cast(op.Greater(out, _c(float(threshold))), to=_UINT8)
    return out


TRANSLATIONS = {
    torch.ops.maskrcnn_fast.rpn_proposals.default: rpn_proposals,
    torch.ops.maskrcnn_fast.detection_postprocess.default: detection_postprocess,
    torch.ops.maskrcnn_fast.multilevel_roi_align.default: multilevel_roi_align,
    torch.ops.maskrcnn_fast.paste_masks.default: paste_masks,
    torch.ops.maskrcnn_fast.roi_align.default: roi_align,
}
