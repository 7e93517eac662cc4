"""Weights as users name them: a file or a torchvision weights name, to a state_dict.

A Mask R-CNN's weights are a file (our checkpoint, a torchvision reference-script checkpoint or
a plain state_dict; a training run's folder) or torchvision's ``DEFAULT``, ``COCO_V1``,
``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``; a backbone's, a file or ``IMAGENET1K_V1``,
``ResNet50_Weights.IMAGENET1K_V1``. Bad values raise ValueError (TypeError for a wrong type)
whose message starts with ``option``, the name of the argument that gave them.
"""
import os
from collections.abc import Mapping
from typing import List

from .files import CHECKPOINT_FILE, load_checkpoint, load_state_dict_file
from .names import fetch_state_dict, is_weights_enum, is_weights_name, weights_enum

__all__ = ["check_weights_spec", "infer_depth", "load_into", "read_backbone_weights", "read_weights"]


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _enum(name: str, kind: str, depth: int, option: str):
    try:
        return weights_enum(name, kind, depth)
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None


def check_weights_spec(spec: str, option: str = "weights", kind: str = "maskrcnn", depth: int = 50) -> None:
    """Fails, naming the option, on a weights name torchvision does not have, before anything
    is loaded or downloaded (a missing file is reported when it is read)."""
    if os.path.exists(spec) or not is_weights_name(spec):
        return
    _enum(spec, kind, depth, option)


def _read_file(path: str, option: str) -> dict:
    try:
        ck = load_checkpoint(path)
    except Exception as e:  # noqa: BLE001  a torn or foreign file
        raise ValueError(f"{option}: cannot read checkpoint {path}: {_first_line(e)}") from None
    if not isinstance(ck, dict):
        raise ValueError(f"{option}: {path} does not hold a state_dict")
    if not isinstance(ck.get("model"), dict):
        ck = {"model": ck}
    ck["_path"] = os.path.join(path, CHECKPOINT_FILE) if os.path.isdir(path) else path
    return ck


def read_weights(spec, option: str = "weights", progress: bool = True) -> dict:
    """A checkpoint dict ``{"model": state_dict, "_path": the file or None, ...}`` for a file
    (or a folder holding checkpoint.pt), a torchvision Mask R-CNN weights name or enum member;
    torchvision's weights come with ``model_args`` (ResNet-50, COCO's classes, eps 0 for
    COCO_V1), fetched from torch hub's cache or downloaded into it."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights as W

    if is_weights_enum(spec):
        w = spec
        if not isinstance(w, W):
            raise ValueError(f"{option}={spec!r} is neither a file nor a {W.__name__} member")
    elif isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if os.path.exists(path):
            return _read_file(path, option)
        if not is_weights_name(path):
            raise ValueError(f"{option}: checkpoint not found: {path}")
        w = _enum(path, "maskrcnn", 50, option)
    else:
        raise TypeError(f"{option} must be a path, a torchvision weights enum or its name, got {type(spec).__name__}")
    kwargs = {"frozen_bn_eps": 0.0} if w == W.COCO_V1 else {}
    return {"model": fetch_state_dict(w, progress), "_path": None,
            "model_args": {"depth": 50, "classes": list(w.meta["categories"]), "kwargs": kwargs}}


def read_backbone_weights(spec, depth: int = 50, option: str = "weights_backbone", progress: bool = True) -> Mapping:
    """A ResNet state_dict from a state_dict, a file, a torchvision ResNet weights enum member or
    its name (for ResNet-``depth``)."""
    if isinstance(spec, Mapping):
        return spec
    if is_weights_enum(spec):
        return fetch_state_dict(spec, progress)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"{option} must be None, a torchvision ResNet weights enum, a path or a state_dict, "
                        f"got {type(spec).__name__}")
    path = os.fspath(spec)
    if os.path.exists(path):
        try:
            return load_state_dict_file(path)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{option}: cannot read {path}: {_first_line(e)}") from None
    if not is_weights_name(path):
        raise ValueError(f"{option}: file not found: {path}")
    return fetch_state_dict(_enum(path, "resnet", depth, option), progress)


def infer_depth(state) -> int:
    """ResNet depth of a Mask R-CNN state_dict, from the blocks in layer3 and their kind."""
    blocks = {k.split(".")[3] for k in state if k.startswith("backbone.body.layer3.")}
    bottleneck = any(k.startswith("backbone.body.layer1.0.conv3.") for k in state)
    table = {(True, 6): 50, (True, 23): 101, (True, 36): 152, (False, 2): 18, (False, 6): 34}
    depth = table.get((bottleneck, len(blocks)))
    if depth is None:
        raise ValueError("cannot tell the ResNet depth of this state_dict (is it a Mask R-CNN checkpoint?)")
    return depth


# the layers whose shape follows the class count: fine-tuning on other classes starts them afresh
_CLASS_LAYERS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def load_into(model, state, option: str = "weights") -> List[str]:
    """Loads a Mask R-CNN state_dict into ``model`` for fine-tuning: every tensor must fit,
    except the class-dependent predictor layers when the class counts differ (they keep their
    fresh initialisation). -> the keys left out."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{option}: the weights lack {len(missing)} of the model's tensors, e.g. {missing[0]} "
                         f"(another depth or layout?)")
    fit, skipped = {}, []
    for k, v in state.items():
        if k not in own:
            continue
        if tuple(v.shape) == tuple(own[k].shape):
            fit[k] = v
        elif k.startswith(_CLASS_LAYERS):
            skipped.append(k)
        else:
            raise ValueError(f"{option}: {k} has shape {tuple(v.shape)}, the model's is {tuple(own[k].shape)}")
    model.load_state_dict(fit, strict=False)
    return skipped
