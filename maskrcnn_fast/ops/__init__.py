"""The ops of maskrcnn_fast, with torchvision's signatures and results."""
from .anchors import AnchorGenerator, grid_anchors
from .box_coder import BoxCoder, decode_boxes, encode_boxes
from .nms import batched_nms, nms
from .roi_align import RoIAlign, roi_align
from .multilevel_roi_align import MultiScaleRoIAlign, multilevel_roi_align
from .paste_masks import paste_masks, paste_masks_batched
from .rpn_proposals import rpn_proposals, proposals_to_list
from .detection_postprocess import detection_postprocess, detections_to_list
from .mask_targets import mask_targets, project_masks_on_boxes
from .packed_mask_targets import packed_mask_targets
from .box_iou import box_iou
from .match_boxes import match_boxes
from . import reference
from . import _autocast, _quantized

_autocast.register()  # torch.autocast: torchvision's casts (see _autocast)
_quantized.register()  # quantized roi_align / nms on the CPU: torchvision's qroi_align / qnms

__all__ = [
    "AnchorGenerator",
    "grid_anchors",
    "BoxCoder",
    "decode_boxes",
    "encode_boxes",
    "nms",
    "batched_nms",
    "RoIAlign",
    "roi_align",
    "MultiScaleRoIAlign",
    "multilevel_roi_align",
    "paste_masks",
    "paste_masks_batched",
    "reference",
    "rpn_proposals",
    "proposals_to_list",
    "detection_postprocess",
    "detections_to_list",
    "mask_targets",
    "project_masks_on_boxes",
    "packed_mask_targets",
    "box_iou",
    "match_boxes",
]
