"""Pure-PyTorch implementations of every op, one module per op under the op's name (as
maskrcnn_fast/ops/<op>.py and csrc/cpu/<op>_kernel.cpp): the oracle of the tests (run in float64),
the "torch" path of the benchmarks and of the model (``ops="torch"``), and the kernels of the
fallback when the compiled extension is not loaded. Plain tensor operations, vectorised where the
algorithm allows.

Every name that maskrcnn_fast.ops also exports has the same interface here, so either package
can serve as the model's op set (maskrcnn_fast.models.opset).
"""
from .anchors import AnchorGenerator, cell_anchors, grid_anchors, image_anchors
from .box_coder import BoxCoder, decode_boxes, encode_boxes
from .nms import batched_nms, nms
from .roi_align import roi_align
from .multilevel_roi_align import MultiScaleRoIAlign, fpn_levels, multilevel_roi_align
from .paste_masks import paste_masks, paste_masks_batched
from .rpn_proposals import rpn_proposals
from .detection_postprocess import detection_postprocess
from .mask_targets import mask_targets
from .packed_mask_targets import packed_mask_targets
from .box_iou import box_iou
from .match_boxes import match_boxes

__all__ = [
    "AnchorGenerator",
    "cell_anchors",
    "grid_anchors",
    "image_anchors",
    "BoxCoder",
    "decode_boxes",
    "encode_boxes",
    "nms",
    "batched_nms",
    "roi_align",
    "MultiScaleRoIAlign",
    "fpn_levels",
    "multilevel_roi_align",
    "paste_masks",
    "paste_masks_batched",
    "rpn_proposals",
    "detection_postprocess",
    "mask_targets",
    "packed_mask_targets",
    "box_iou",
    "match_boxes",
]
