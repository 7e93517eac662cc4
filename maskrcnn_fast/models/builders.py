"""Builders with torchvision's signature: ``maskrcnn_resnet50_fpn`` and ``maskrcnn_resnet_fpn``.

``weights`` may be torchvision's ``MaskRCNN_ResNet50_FPN_Weights`` (or its name), a path to a
checkpoint file, or a state_dict; any of them loads into our model exactly as into torchvision's.
"""
import argparse
import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from typing import Optional, Union
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ._ops import OpSet
from .backbone import resnet_fpn_backbone
from .mask_rcnn import MaskRCNN

__all__ = ["WeightsUnavailableError", "fetch_state_dict", "frozen_bn_eps_of", "maskrcnn_resnet50_fpn",
           "maskrcnn_resnet_fpn", "weights_enum"]

# torchvision's COCO_V1 weights predate FrozenBatchNorm2d's eps: they need eps = 0. Their file is
# recognised by its content (torchvision names it after the first 8 hex digits of its sha256),
# never by its name: a renamed copy needs eps 0 just the same.
_ZERO_EPS_SHA256 = {"bf2d0c1e": "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"}
_COCO_V1_NAMES = ("COCO_V1", "DEFAULT", "MaskRCNN_ResNet50_FPN_Weights.COCO_V1", "MaskRCNN_ResNet50_FPN_Weights.DEFAULT")


class WeightsUnavailableError(OSError):
    """torchvision weights that are neither in torch hub's cache nor downloadable; the message
    says which file to fetch and where to put it."""


def _is_weights_enum(w) -> bool:
    from torchvision.models._api import WeightsEnum

    return isinstance(w, WeightsEnum)


def weights_enum(name: str, kind: str = "maskrcnn", depth: int = 50):
    """A torchvision weights enum member from its name: ``kind`` "maskrcnn" takes ``DEFAULT``,
    ``COCO_V1`` or ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``; "resnet" takes ``DEFAULT``,
    ``IMAGENET1K_V1`` or ``ResNet50_Weights.IMAGENET1K_V1`` for ResNet-``depth``.
    Raises ValueError saying what the name should be."""
    from torchvision.models import detection, resnet

    if kind == "maskrcnn":
        if depth != 50:
            raise ValueError(f"torchvision has Mask R-CNN weights for ResNet-50 only, not ResNet-{depth}")
        enum = detection.MaskRCNN_ResNet50_FPN_Weights
    elif kind == "resnet":
        enum = getattr(resnet, f"ResNet{depth}_Weights", None)
        if enum is None:
            raise ValueError(f"torchvision has no ResNet-{depth} weights")
        other = re.fullmatch(r"(ResNet\d+_Weights)\.\w+", str(name))
        if other and other.group(1) != enum.__name__:
            raise ValueError(f"{name} are {other.group(1)[:-8]} weights, the backbone is ResNet-{depth}")
    else:
        raise ValueError(f"kind must be maskrcnn or resnet, got {kind!r}")
    try:
        return enum.verify(name)
    except (ValueError, KeyError):
        members = ", ".join(["DEFAULT"] + [m.name for m in enum])
        raise ValueError(f"{name!r} is neither a file nor one of torchvision's {enum.__name__} weights "
                         f"({members})") from None


def fetch_state_dict(weights, progress: bool = True) -> Mapping:
    """A torchvision weights enum's state_dict, from torch hub's cache (``torch.hub.get_dir()``
    /checkpoints) or downloaded into it. Raises :class:`WeightsUnavailableError` with one line
    naming the URL and the folder when that fails (no network, say), not urllib's traceback."""
    url = weights.url
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    cached = os.path.join(folder, os.path.basename(urlparse(url).path))
    had = os.path.isfile(cached)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as e:  # noqa: BLE001  urllib, socket, hash and unpickling errors alike
        name = f"{type(weights).__name__}.{weights.name}"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if had:
            raise WeightsUnavailableError(f"cannot read {cached} ({name}): {reason}; delete it and "
                                          f"fetch {url} again") from None
        raise WeightsUnavailableError(f"cannot download {name} ({reason}): fetch {url} and put it in "
                                      f"{folder}/ (or give the file's path instead)") from None


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def frozen_bn_eps_of(path=None, checkpoint=None) -> Optional[float]:
    """The FrozenBatchNorm2d eps that weights were trained with, where their content tells
    (None: it does not, use the default 1e-5). ``checkpoint``: what the file holds.

    - our checkpoints: their ``model_args`` ``frozen_bn_eps``;
    - torchvision reference-script checkpoints fine-tuned from COCO_V1 (``args.weights``, or
      the older ``args.pretrained``): 0;
    - torchvision's COCO_V1 file itself, under any name (its sha256): 0.
    """
    ck = checkpoint
    if isinstance(ck, Mapping):
        if "model_args" in ck:  # ours: built with what model_args says
            margs = ck["model_args"] if isinstance(ck["model_args"], Mapping) else {}
            eps = (margs.get("kwargs") or {}).get("frozen_bn_eps")
            return None if eps is None else float(eps)
        args = ck.get("args")
        args = vars(args) if isinstance(args, argparse.Namespace) else args
        if isinstance(args, Mapping) and args.get("model", "maskrcnn_resnet50_fpn") == "maskrcnn_resnet50_fpn":
            if args.get("weights") in _COCO_V1_NAMES or args.get("pretrained") is True:
                return 0.0
    if path is not None and os.path.isfile(os.fspath(path)):
        if _file_sha256(os.fspath(path))[:8] in _ZERO_EPS_SHA256:
            return 0.0
    return None


def _state_of(obj, path) -> Mapping:
    # torchvision's reference scripts save {"model": state_dict, "optimizer": ..., ...}
    sd = obj["model"] if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else obj
    if not isinstance(sd, Mapping):
        raise TypeError(f"{path} does not hold a state_dict (got {type(sd).__name__})")
    return sd


def _read_file(path):
    # torchvision's reference scripts store their argparse.Namespace next to the weights
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)


def _load_file(path) -> Mapping:
    return _state_of(_read_file(path), path)


def _resolve_weights(weights, depth: int, progress: bool):
    """-> (state_dict or None, num_classes the weights imply or None, FrozenBatchNorm eps or None)."""
    if weights is None:
        return None, None, None
    if isinstance(weights, Mapping):
        return weights, None, None
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(os.fspath(weights)):
        raw = _read_file(weights)
        return _state_of(raw, weights), None, frozen_bn_eps_of(weights, raw)
    if isinstance(weights, str) or _is_weights_enum(weights):
        w = weights_enum(weights, "maskrcnn", depth) if isinstance(weights, str) else weights
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights as W

        if not isinstance(w, W):
            raise ValueError(f"weights={weights!r} is neither a file nor a {W.__name__} member")
        if depth != 50:
            raise ValueError(f"torchvision has Mask R-CNN weights for ResNet-50 only, not ResNet-{depth}")
        eps = 0.0 if w == W.COCO_V1 else None
        return fetch_state_dict(w, progress), len(w.meta["categories"]), eps
    raise TypeError(
        f"weights must be None, a torchvision weights enum, a path or a state_dict, got {type(weights).__name__}"
    )


def _backbone_weights(weights_backbone, depth: int = 50, progress: bool = True):
    """-> ResNet state_dict or None (a torchvision enum, its name, a path or a state_dict)."""
    if weights_backbone is None:
        return None
    if isinstance(weights_backbone, Mapping):
        return weights_backbone
    if isinstance(weights_backbone, (str, os.PathLike)) and os.path.isfile(os.fspath(weights_backbone)):
        return _load_file(weights_backbone)
    if isinstance(weights_backbone, str):
        return fetch_state_dict(weights_enum(weights_backbone, "resnet", depth), progress)
    if _is_weights_enum(weights_backbone):
        return fetch_state_dict(weights_backbone, progress)
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
    frozen_batch_norm: Optional[bool] = None,
    fpn_channels: int = 256,
    **kwargs,
) -> MaskRCNN:
    """Mask R-CNN on a ResNet-``depth`` (18, 34, 50, 101, 152) FPN backbone.

    weights: torchvision MaskRCNN_ResNet50_FPN_Weights (or its name; depth 50 only), a checkpoint
    path, or a state_dict; given weights, ``weights_backbone`` is ignored and num_classes comes
    from them. weights_backbone: a torchvision ResNet weights enum (or its name), a path or a
    state_dict for the trunk. Enums load from torch hub's cache or download into it
    (:func:`fetch_state_dict`). With weights of either kind the trunk uses FrozenBatchNorm2d and
    trains its last ``trainable_backbone_layers`` (default 3) layers; without, BatchNorm2d and
    all 5 train; ``frozen_batch_norm`` True / False forces either (rebuilding a model trained
    from pretrained weights before its checkpoint loads). frozen_bn_eps: FrozenBatchNorm2d's
    eps; by default 0 for torchvision's COCO_V1 weights (as torchvision sets) and for weights
    whose content says so (:func:`frozen_bn_eps_of`; never the file's name), else 1e-5.
    ops: "fused" or "torch". fpn_channels: the FPN's width
    (torchvision's 256; a smaller one needs matching heads, e.g. for a CPU demo). Other keyword
    arguments go to :class:`MaskRCNN` (min_size, max_size, rpn_*, box_*, mask_*, ...); with
    box_predictor and mask_predictor given, leave num_classes None.
    """
    state, implied_classes, eps = _resolve_weights(weights, depth, progress)
    own_predictors = kwargs.get("box_predictor") is not None and kwargs.get("mask_predictor") is not None
    if state is not None:
        weights_backbone = None
        if implied_classes is None and "roi_heads.box_predictor.cls_score.weight" in state:
            implied_classes = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
        if num_classes is not None and implied_classes is not None and num_classes != implied_classes:
            raise ValueError(f"num_classes={num_classes} but the weights have {implied_classes} classes")
        num_classes = implied_classes if implied_classes is not None else num_classes
    if own_predictors:
        num_classes = None  # the predictors fix the class count
    elif num_classes is None:
        num_classes = 91
    bb_state = _backbone_weights(weights_backbone, depth, progress)

    is_trained = state is not None or weights_backbone is not None
    if frozen_batch_norm is not None:
        is_trained = bool(frozen_batch_norm)
    layers = _trainable_layers(is_trained, trainable_backbone_layers)
    norm = FrozenBatchNorm2d if is_trained else nn.BatchNorm2d
    backbone = resnet_fpn_backbone(depth, norm_layer=norm, trainable_layers=layers, out_channels=fpn_channels,
                                   state_dict=bb_state)
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
