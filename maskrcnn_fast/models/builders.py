"""Builders with torchvision's signature: ``maskrcnn_resnet50_fpn`` and ``maskrcnn_resnet_fpn``.

``weights`` may be torchvision's ``MaskRCNN_ResNet50_FPN_Weights`` (or its name), a path to a
checkpoint file, or a state_dict; any of them loads into our model exactly as into torchvision's.
"""
import os
import warnings
from collections.abc import Mapping
from typing import Optional, Union

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ._ops import OpSet
from .backbone import resnet_fpn_backbone
from .mask_rcnn import MaskRCNN

__all__ = ["maskrcnn_resnet50_fpn", "maskrcnn_resnet_fpn"]

# torchvision's COCO_V1 weights predate FrozenBatchNorm2d's eps: they need eps = 0
_COCO_V1_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"


def _is_weights_enum(w) -> bool:
    from torchvision.models._api import WeightsEnum

    return isinstance(w, WeightsEnum)


def _load_file(path) -> Mapping:
    sd = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    # torchvision's reference scripts save {"model": state_dict, "optimizer": ..., ...}
    if isinstance(sd, Mapping) and isinstance(sd.get("model"), Mapping):
        sd = sd["model"]
    if not isinstance(sd, Mapping):
        raise TypeError(f"{path} does not hold a state_dict (got {type(sd).__name__})")
    return sd


def _resolve_weights(weights, depth: int, progress: bool):
    """-> (state_dict or None, num_classes the weights imply or None, FrozenBatchNorm eps or None)."""
    if weights is None:
        return None, None, None
    if isinstance(weights, Mapping):
        return weights, None, None
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(os.fspath(weights)):
        eps = 0.0 if os.path.basename(os.fspath(weights)) == _COCO_V1_FILE else None
        return _load_file(weights), None, eps
    if isinstance(weights, str) or _is_weights_enum(weights):
        if depth != 50:
            raise ValueError(f"torchvision has Mask R-CNN weights for ResNet-50 only, not ResNet-{depth}")
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights as W

        try:
            w = W.verify(weights)
        except (ValueError, KeyError) as e:
            raise ValueError(f"weights={weights!r} is neither a file nor a {W.__name__} member") from e
        eps = 0.0 if w == W.COCO_V1 else None
        return w.get_state_dict(progress=progress, check_hash=True), len(w.meta["categories"]), eps
    raise TypeError(
        f"weights must be None, a torchvision weights enum, a path or a state_dict, got {type(weights).__name__}"
    )


def _backbone_weights(weights_backbone):
    """-> (torchvision ResNet weights enum or None, state_dict or None)."""
    if weights_backbone is None or _is_weights_enum(weights_backbone):
        return weights_backbone, None
    if isinstance(weights_backbone, Mapping):
        return None, weights_backbone
    if isinstance(weights_backbone, (str, os.PathLike)) and os.path.isfile(os.fspath(weights_backbone)):
        return None, _load_file(weights_backbone)
    raise TypeError("weights_backbone must be None, a torchvision ResNet weights enum, a path or a state_dict")


def _trainable_layers(is_trained: bool, requested: Optional[int]) -> int:
    if not is_trained:
        if requested is not None:
            warnings.warn(
                "trainable_backbone_layers has no effect without weights or weights_backbone; "
                "all 5 backbone layers are trainable"
            )
        return 5
    layers = 3 if requested is None else requested
    if not 0 <= layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in [0, 5], got {layers}")
    return layers


def maskrcnn_resnet_fpn(
    depth: int = 50,
    *,
    weights=None,
    progress: bool = True,
    num_classes: Optional[int] = None,
    weights_backbone=None,
    trainable_backbone_layers: Optional[int] = None,
    ops: Union[str, OpSet] = "fused",
    frozen_bn_eps: Optional[float] = None,
    fpn_channels: int = 256,
    **kwargs,
) -> MaskRCNN:
    """Mask R-CNN on a ResNet-``depth`` (18, 34, 50, 101, 152) FPN backbone.

    weights: torchvision MaskRCNN_ResNet50_FPN_Weights (or its name; depth 50 only), a checkpoint
    path, or a state_dict; given weights, ``weights_backbone`` is ignored and num_classes comes
    from them. weights_backbone: a torchvision ResNet weights enum, a path or a state_dict for
    the trunk. With weights of either kind the trunk uses FrozenBatchNorm2d and trains its last
    ``trainable_backbone_layers`` (default 3) layers; without, BatchNorm2d and all 5 train.
    frozen_bn_eps: overrides FrozenBatchNorm2d's eps (0 is set for torchvision's COCO_V1
    weights, as torchvision does). ops: "fused" or "torch". fpn_channels: the FPN's width
    (torchvision's 256; a smaller one needs matching heads, e.g. for a CPU demo). Other keyword
    arguments go to :class:`MaskRCNN` (min_size, max_size, rpn_*, box_*, mask_*, ...); with
    box_predictor and mask_predictor given, leave num_classes None.
    """
    state, implied_classes, eps = _resolve_weights(weights, depth, progress)
    if state is not None:
        weights_backbone = None
        if implied_classes is None and "roi_heads.box_predictor.cls_score.weight" in state:
            implied_classes = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
        if num_classes is not None and implied_classes is not None and num_classes != implied_classes:
            raise ValueError(f"num_classes={num_classes} but the weights have {implied_classes} classes")
        num_classes = implied_classes if implied_classes is not None else num_classes
    if num_classes is None and (kwargs.get("box_predictor") is None or kwargs.get("mask_predictor") is None):
        num_classes = 91
    bb_enum, bb_state = _backbone_weights(weights_backbone)

    is_trained = state is not None or weights_backbone is not None
    layers = _trainable_layers(is_trained, trainable_backbone_layers)
    norm = FrozenBatchNorm2d if is_trained else nn.BatchNorm2d
    backbone = resnet_fpn_backbone(depth, weights=bb_enum, norm_layer=norm, trainable_layers=layers,
                                   out_channels=fpn_channels, state_dict=bb_state)
    model = MaskRCNN(backbone, num_classes=num_classes, ops=ops, **kwargs)
    if state is not None:
        model.load_state_dict(state)
    eps = frozen_bn_eps if frozen_bn_eps is not None else eps
    if eps is not None:
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.eps = eps
    return model


def maskrcnn_resnet50_fpn(
    *,
    weights=None,
    progress: bool = True,
    num_classes: Optional[int] = None,
    weights_backbone=None,
    trainable_backbone_layers: Optional[int] = None,
    ops: Union[str, OpSet] = "fused",
    **kwargs,
) -> MaskRCNN:
    """torchvision's ``maskrcnn_resnet50_fpn`` on our ops (see :func:`maskrcnn_resnet_fpn`);
    num_classes defaults to 91 (COCO)."""
    return maskrcnn_resnet_fpn(
        50,
        weights=weights,
        progress=progress,
        num_classes=num_classes,
        weights_backbone=weights_backbone,
        trainable_backbone_layers=trainable_backbone_layers,
        ops=ops,
        **kwargs,
    )
