"""Builders with torchvision's signature (``maskrcnn_resnet50_fpn``, ``maskrcnn_resnet_fpn``), and
the model a checkpoint describes (``build_model``, ``model_from_checkpoint``).

``weights`` may be torchvision's ``MaskRCNN_ResNet50_FPN_Weights`` (or its name), a path to a
checkpoint file, or a state_dict; any of them loads into our model exactly as into torchvision's.
Reading them is :mod:`maskrcnn_fast.weights`' (the room below this one).
"""
import os
import warnings
from collections.abc import Mapping
from typing import Optional, Union

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..weights import checkpoint_eps, coco_category_names, infer_depth, is_weights_enum, is_weights_name, \
    read_backbone_weights, read_weights
from .backbone import resnet_fpn_backbone
from .mask_rcnn import MaskRCNN
from .opset import OpSet, get_ops
from .roi_heads import FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, TwoMLPHead
from .rpn import RPNHead

__all__ = ["DEFAULT_WIDTHS", "build_model", "maskrcnn_resnet50_fpn", "maskrcnn_resnet_fpn", "model_from_checkpoint"]


def _resolve_weights(weights, depth: int, progress: bool):
    """-> (state_dict or None, the FrozenBatchNorm eps the weights say or None)."""
    if weights is None:
        return None, None
    if isinstance(weights, Mapping):
        return weights, None
    torchvisions = is_weights_enum(weights) or (is_weights_name(weights) and not os.path.exists(weights))
    if torchvisions and depth != 50:  # before any download
        raise ValueError(f"torchvision has Mask R-CNN weights for ResNet-50 only, not ResNet-{depth}")
    ck = read_weights(weights, "weights", progress=progress)
    return ck["model"], checkpoint_eps(ck)


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
    (:func:`maskrcnn_fast.weights.fetch_state_dict`). With weights of either kind the trunk uses
    FrozenBatchNorm2d and trains its last ``trainable_backbone_layers`` (default 3) layers;
    without, BatchNorm2d and all 5 train; ``frozen_batch_norm`` True / False forces either
    (rebuilding a model trained from pretrained weights before its checkpoint loads).
    frozen_bn_eps: FrozenBatchNorm2d's eps; by default 0 for torchvision's COCO_V1 weights (as
    torchvision sets) and for weights whose content says so
    (:func:`maskrcnn_fast.weights.frozen_bn_eps_of`; never the file's name), else 1e-5.
    ops: "fused" or "torch". fpn_channels: the FPN's width
    (torchvision's 256; a smaller one needs matching heads, e.g. for a CPU demo). Other keyword
    arguments go to :class:`MaskRCNN` (min_size, max_size, rpn_*, box_*, mask_*, ...;
    ``paste_masks_in_image=False``: masks handed back unpasted, as ``box_masks``, for thousands of
    detections per image); with box_predictor and mask_predictor given, leave num_classes None.
    """
    state, eps = _resolve_weights(weights, depth, progress)
    own_predictors = kwargs.get("box_predictor") is not None and kwargs.get("mask_predictor") is not None
    if state is not None:
        weights_backbone = None
        cls_score = state.get("roi_heads.box_predictor.cls_score.weight")
        if cls_score is not None:
            if num_classes is not None and num_classes != cls_score.shape[0]:
                raise ValueError(f"num_classes={num_classes} but the weights have {cls_score.shape[0]} classes")
            num_classes = cls_score.shape[0]
    if own_predictors:
        num_classes = None  # the predictors fix the class count
    elif num_classes is None:
        num_classes = 91
    bb_state = None if weights_backbone is None else read_backbone_weights(weights_backbone, depth, progress=progress)

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


DEFAULT_WIDTHS = {"fpn_channels": 256, "box_head_width": 1024, "mask_head_width": 256}


def build_model(model_args: dict, ops: str = "fused", weights=None, weights_backbone=None):
    """A Mask R-CNN from ``{"depth", "num_classes", "kwargs"}`` (what checkpoints store).
    kwargs may hold ``anchor_sizes`` (one size per FPN level), ``aspect_ratios``, and the
    widths ``fpn_channels`` (default 256), ``box_head_width`` (TwoMLPHead's representation
    size, default 1024) and ``mask_head_width`` (the mask head's convolutions and the
    predictor's dim_reduced, default 256); the rest go to the builder (frozen_batch_norm,
    trainable_backbone_layers, frozen_bn_eps) and the model. weights: a state_dict;
    weights_backbone: a ResNet state_dict. Raises ValueError naming the bad value (weights that
    do not fit included), TypeError for an unknown keyword."""
    kwargs = dict(model_args.get("kwargs") or {})
    widths = {k: kwargs.pop(k, None) for k in DEFAULT_WIDTHS}
    for k, v in widths.items():
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
        widths[k] = DEFAULT_WIDTHS[k] if v is None else v
    c = widths["fpn_channels"]
    kwargs["fpn_channels"] = c
    sizes = kwargs.pop("anchor_sizes", None)
    ratios = kwargs.pop("aspect_ratios", None)
    if sizes is not None or ratios is not None:
        sizes = tuple(int(s) for s in (sizes or (32, 64, 128, 256, 512)))
        if len(sizes) != 5:
            raise ValueError(f"anchor_sizes: one per FPN level (5), got {len(sizes)}")
        ratios = tuple(float(r) for r in (ratios or (0.5, 1.0, 2.0)))
        kwargs["rpn_anchor_generator"] = get_ops(ops).AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * 5)
        kwargs["rpn_head"] = RPNHead(c, len(ratios))
    num_classes = int(model_args["num_classes"])
    box_w, mask_w = widths["box_head_width"], widths["mask_head_width"]
    if (box_w, mask_w) != (DEFAULT_WIDTHS["box_head_width"], DEFAULT_WIDTHS["mask_head_width"]):
        # other head widths: the heads are built here, so the predictors fix the class count
        kwargs.update(box_head=TwoMLPHead(c * 7 * 7, box_w), box_predictor=FastRCNNPredictor(box_w, num_classes),
                      mask_head=MaskRCNNHeads(c, (mask_w,) * 4, 1),
                      mask_predictor=MaskRCNNPredictor(mask_w, mask_w, num_classes))
        num_classes = None
    try:
        return maskrcnn_resnet_fpn(int(model_args["depth"]), num_classes=num_classes, weights=weights,
                                   weights_backbone=weights_backbone, ops=ops, **kwargs)
    except RuntimeError as e:  # load_state_dict: missing or misshapen tensors
        raise ValueError(f"the weights do not fit the model: {str(e).splitlines()[0]}") from None


def model_from_checkpoint(path, num_classes: Optional[int] = None, ops: str = "fused",
                          overrides: Optional[dict] = None, frozen_bn_eps: Optional[float] = None,
                          option: str = "checkpoint", checkpoint: Optional[dict] = None):
    """-> (model in eval mode, model_args). ``path``: our checkpoint (or its run's folder), a
    torchvision reference checkpoint, a plain state_dict (.pth) or a torchvision weights name
    (COCO_V1, DEFAULT). num_classes: what the caller needs (an error when the checkpoint has
    another count). overrides: model kwargs to change (min_size, ...). frozen_bn_eps: the frozen
    batch norms' eps (default: what the checkpoint says, see
    :func:`maskrcnn_fast.weights.checkpoint_eps`). checkpoint: what :func:`read_weights` gave for
    ``path``, if read already. Errors name ``option``, the argument that gave ``path``."""
    ck = checkpoint if checkpoint is not None else read_weights(path, option)
    state = ck["model"]
    if "roi_heads.box_predictor.cls_score.weight" not in state:
        raise ValueError(f"{option}: {path} is not a Mask R-CNN checkpoint (no roi_heads.box_predictor)")
    have = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    if num_classes is not None and num_classes != have:
        raise ValueError(f"the checkpoint {path} has {have} classes (background included), "
                         f"but {num_classes} were asked for")
    model_args = dict(ck.get("model_args") or {})
    model_args.setdefault("depth", infer_depth(state))
    model_args["num_classes"] = have
    model_args["kwargs"] = {**(model_args.get("kwargs") or {}), **(overrides or {})}
    eps = checkpoint_eps(ck, frozen_bn_eps)
    if eps is not None:
        model_args["kwargs"]["frozen_bn_eps"] = eps
    if not model_args.get("classes"):
        model_args["classes"] = coco_category_names() if have == 91 else None
    model = build_model(model_args, ops=ops, weights=state)
    return model.eval(), model_args
