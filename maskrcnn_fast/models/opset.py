"""The one place where the model chooses its ops: ``"fused"`` (our kernels, maskrcnn_fast.ops) or
``"torch"`` (the pure-PyTorch implementations, maskrcnn_fast.ops.reference).

The members of an :class:`OpSet` are derived from the ops package, not listed here: every name
that maskrcnn_fast.ops and maskrcnn_fast.ops.reference both export, with the same interface in
both (each documented in maskrcnn_fast.ops). Adding an op to both packages adds it to every set.
The model code only ever calls members of its set, so it never branches on the choice. The ones
it calls:

- ``AnchorGenerator(sizes, aspect_ratios)``: module; ``(image_list, features) -> list of
  Tensor[A, 4]`` per image (torchvision's anchors and order).
- ``BoxCoder(weights, bbox_xform_clip)``: ``encode_single(gt [K, 4], ref [K, 4]) -> [K, 4]`` and
  ``decode_single(codes [K, 4*C], ref [K, 4], image_size=(h, w) or None) -> [K, 4*C]`` (decode,
  then clip to the image when ``image_size`` is given).
- ``nms``, ``batched_nms``, ``roi_align``, ``box_iou``: torchvision's.
- ``MultiScaleRoIAlign(featmap_names, output_size, sampling_ratio)``: module;
  ``(features dict, boxes list, image_shapes) -> Tensor[K, C, S, S]``.
- ``rpn_proposals``, ``detection_postprocess``: the RPN's proposals and the box head's
  detections, padded (see maskrcnn_fast.ops.rpn_proposals and .detection_postprocess).
- ``paste_masks(masks [N, 1, M, M], boxes [N, 4], (h, w)) -> Tensor[N, 1, h, w]``.
- ``mask_targets(gt_masks list of [G_i, H_i, W_i] uint8, proposals list of [K_i, 4],
  matched_idxs list of [K_i], M) -> Tensor[sum K_i, M, M]``: torchvision's
  ``project_masks_on_boxes`` of every image, concatenated.
- ``packed_mask_targets(data, instances, boxes, instance_index, M)``: the same targets from
  PackedMasks (each instance's crop, the resize folded into the sampling; training targets).
- ``match_boxes``: torchvision's Matcher on box_iou for all images at once (training targets).
"""
from types import SimpleNamespace
from typing import Union

from .. import ops
from ..ops import reference

__all__ = ["OpSet", "get_ops", "OP_NAMES"]

# The ops with both a fused and a pure-PyTorch form, in the ops package's order.
OP_NAMES = tuple(name for name in ops.__all__ if name in reference.__all__)


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
        if self.name in _PACKAGES:
            return get_ops, (self.name,)
        return _rebuild, (self.name, {k: v for k, v in vars(self).items() if k != "name"})


def _rebuild(name, ops):
    return OpSet(name, **ops)


_PACKAGES = {"fused": ops, "torch": reference}
_CACHE = {}


def get_ops(ops: Union[str, OpSet] = "fused") -> OpSet:
    """``"fused"`` or ``"torch"`` -> its OpSet; an OpSet is returned as it is."""
    if isinstance(ops, OpSet):
        return ops
    if ops not in _PACKAGES:
        raise ValueError(f"ops must be one of {sorted(_PACKAGES)} or an OpSet, got {ops!r}")
    if ops not in _CACHE:
        package = _PACKAGES[ops]
        _CACHE[ops] = OpSet(ops, **{name: getattr(package, name) for name in OP_NAMES})
    return _CACHE[ops]
