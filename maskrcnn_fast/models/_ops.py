"""The one place where the model chooses its ops: ``"fused"`` (our kernels, maskrcnn_fast.ops) or
``"torch"`` (the pure-PyTorch implementations, maskrcnn_fast.ops.reference).

The model code only ever calls the members of an :class:`OpSet`, so it never branches on the
choice. Members:

- ``AnchorGenerator(sizes, aspect_ratios)``: module; ``(image_list, features) -> list of
  Tensor[A, 4]`` per image (torchvision's anchors and order).
- ``BoxCoder(weights, bbox_xform_clip)``: ``encode_single(gt [K, 4], ref [K, 4]) -> [K, 4]`` and
  ``decode_single(codes [K, 4*C], ref [K, 4], image_size=(h, w) or None) -> [K, 4*C]`` (decode,
  then clip to the image when ``image_size`` is given).
- ``nms(boxes, scores, iou_threshold)``, ``batched_nms(boxes, scores, idxs, iou_threshold)``.
- ``roi_align(input, rois [K, 5], output_size, spatial_scale, sampling_ratio, aligned)``.
- ``MultiScaleRoIAlign(featmap_names, output_size, sampling_ratio)``: module;
  ``(features dict, boxes list, image_shapes) -> Tensor[K, C, S, S]``.
- ``rpn_proposals(logits, deltas, cell_anchors, strides, image_sizes [N, 2], pre_nms_top_n,
  post_nms_top_n, nms_thresh, min_size, score_thresh) -> boxes [N, P, 4], scores [N, P],
  counts [N]``: the RPN's proposals, padded (see maskrcnn_fast.ops.rpn_proposals).
- ``detection_postprocess(class_logits [N*P, C], box_regression, proposals [N, P, 4], counts,
  image_sizes, weights, bbox_xform_clip, score_thresh, nms_thresh, detections_per_img) ->
  boxes [N, D, 4], scores, labels, counts, roi_index``: the box head's detections, padded.
- ``paste_masks(masks [N, 1, M, M], boxes [N, 4], (h, w)) -> Tensor[N, 1, h, w]``.
- ``mask_targets(gt_masks list of [G_i, H_i, W_i] uint8, proposals list of [K_i, 4],
  matched_idxs list of [K_i], M) -> Tensor[sum K_i, M, M]``: torchvision's
  ``project_masks_on_boxes`` of every image, concatenated.
- ``box_iou(boxes1 [M, 4], boxes2 [N, 4]) -> Tensor[M, N]``: torchvision's box_iou.
- ``match_boxes(gt_boxes [N, G, 4], gt_counts [N], boxes [N, T, 4] or [T, 4], box_counts [N] or
  None, high_threshold, low_threshold, allow_low_quality_matches) -> int64 Tensor[N, T]``:
  torchvision's Matcher on box_iou for all images at once (training targets).
"""
import math
from types import SimpleNamespace
from typing import Union

import torch
from torch import nn

__all__ = ["OpSet", "get_ops", "OP_NAMES"]

OP_NAMES = (
    "AnchorGenerator",
    "BoxCoder",
    "nms",
    "batched_nms",
    "roi_align",
    "MultiScaleRoIAlign",
    "rpn_proposals",
    "detection_postprocess",
    "paste_masks",
    "mask_targets",
    "box_iou",
    "match_boxes",
)


class OpSet(SimpleNamespace):
    """A named set of the ops the model calls (see the module docstring)."""

    def __init__(self, name: str, **ops):
        missing = [n for n in OP_NAMES if n not in ops]
        if missing:
            raise ValueError(f"OpSet {name!r} lacks {missing}")
        super().__init__(name=name, **ops)

    # stateless: copies of a model share the set; pickles of a named set name it
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        if self.name in _FACTORIES:
            return get_ops, (self.name,)
        return _rebuild, (self.name, {k: v for k, v in vars(self).items() if k != "name"})


def _rebuild(name, ops):
    return OpSet(name, **ops)


def _fused() -> OpSet:
    from .. import ops

    return OpSet(
        "fused",
        AnchorGenerator=ops.AnchorGenerator,
        BoxCoder=ops.BoxCoder,
        nms=ops.nms,
        batched_nms=ops.batched_nms,
        roi_align=ops.roi_align,
        MultiScaleRoIAlign=ops.MultiScaleRoIAlign,
        rpn_proposals=ops.rpn_proposals,
        detection_postprocess=ops.detection_postprocess,
        paste_masks=ops.paste_masks,
        mask_targets=ops.mask_targets,
        box_iou=ops.box_iou,
        match_boxes=ops.match_boxes,
    )


def _ref():
    from ..ops import reference

    return reference


class _RefAnchorGenerator(nn.Module):
    """The AnchorGenerator interface on the reference functions (one size tuple per level)."""

    def __init__(self, sizes, aspect_ratios):
        super().__init__()
        self.sizes, self.aspect_ratios = sizes, aspect_ratios
        self.cell_anchors = [_ref().cell_anchors(s, a) for s, a in zip(sizes, aspect_ratios)]

    def num_anchors_per_location(self):
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_list, feature_maps):
        f = feature_maps[0]
        cells = [c.to(dtype=f.dtype, device=f.device) for c in self.cell_anchors]
        grids = [tuple(fm.shape[-2:]) for fm in feature_maps]
        return _ref().image_anchors(cells, image_list.tensors.shape[-2:], grids, len(image_list.image_sizes))


class _RefBoxCoder:
    """The BoxCoder interface (encode_single, decode_single with clip) on the reference functions."""

    def __init__(self, weights, bbox_xform_clip: float = math.log(1000.0 / 16)):
        self.weights, self.bbox_xform_clip = weights, bbox_xform_clip

    def encode_single(self, reference_boxes, proposals):
        return _ref().encode_boxes(reference_boxes, proposals, self.weights)

    def decode_single(self, rel_codes, boxes, image_size=None):
        return _ref().decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip, image_size)


class _RefMultiScaleRoIAlign(nn.Module):
    """The MultiScaleRoIAlign interface on the reference multilevel_roi_align. The scales are
    torchvision's: 2 ** round(log2(H_l / largest image height)), inferred on the first call."""

    def __init__(self, featmap_names, output_size, sampling_ratio, *, canonical_scale=224, canonical_level=4):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level
        self.scales = None

    def forward(self, x, boxes, image_shapes):
        feats = [v for k, v in x.items() if k in self.featmap_names]
        if self.scales is None:
            max_h = max(int(s[0]) for s in image_shapes)
            # in float32, as torchvision rounds it
            self.scales = [2.0 ** float(torch.tensor(f.shape[-2] / max_h).log2().round()) for f in feats]
        return _ref().multilevel_roi_align(
            feats, boxes, self.output_size, self.scales, self.sampling_ratio, False,
            self.canonical_scale, self.canonical_level,
        )


def _torch() -> OpSet:
    from ..ops import reference as ref

    return OpSet(
        "torch",
        AnchorGenerator=_RefAnchorGenerator,
        BoxCoder=_RefBoxCoder,
        nms=ref.nms,
        batched_nms=ref.batched_nms,
        roi_align=ref.roi_align,
        MultiScaleRoIAlign=_RefMultiScaleRoIAlign,
        rpn_proposals=ref.rpn_proposals,
        detection_postprocess=ref.detection_postprocess,
        paste_masks=ref.paste_masks,
        mask_targets=ref.mask_targets,
        box_iou=ref.box_iou,
        match_boxes=ref.match_boxes,
    )


_FACTORIES = {"fused": _fused, "torch": _torch}
_CACHE = {}


def get_ops(ops: Union[str, OpSet] = "fused") -> OpSet:
    """``"fused"`` or ``"torch"`` -> its OpSet; an OpSet is returned as it is."""
    if isinstance(ops, OpSet):
        return ops
    if ops not in _FACTORIES:
        raise ValueError(f"ops must be one of {sorted(_FACTORIES)} or an OpSet, got {ops!r}")
    if ops not in _CACHE:
        _CACHE[ops] = _FACTORIES[ops]()
    return _CACHE[ops]
