"""Data sets, transforms and batching in torchvision's detection format.

An item is ``(image, target)``: image float32 Tensor[3, H, W] in [0, 1]; target a dict with
``boxes`` float32 [K, 4] (x1, y1, x2, y2 pixels), ``labels`` int64 [K] (>= 1), ``masks`` uint8
[K, H, W] (or, with the data sets' ``mask_format="packed"``, a
:class:`maskrcnn_fast.structures.PackedMasks`: each mask's crop in its box), ``image_id`` int,
``area`` float32 [K], ``iscrowd`` int64 [K]. Data sets expose ``num_classes`` (background
included), ``classes`` (index 0 "__background__") and ``get_height_and_width(i)``.
"""
from .coco import CocoDetection
from .samplers import GroupedBatchSampler, collate_fn, create_aspect_ratio_groups
from .synthetic import SyntheticShapes
from .transforms import Compose, RandomHorizontalFlip, ToTensor

__all__ = [
    "CocoDetection",
    "Compose",
    "GroupedBatchSampler",
    "RandomHorizontalFlip",
    "SyntheticShapes",
    "ToTensor",
    "collate_fn",
    "create_aspect_ratio_groups",
]
