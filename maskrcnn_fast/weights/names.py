"""torchvision's weights by name, from torch hub's cache or downloaded into it.

Mask R-CNN: ``DEFAULT``, ``COCO_V1`` or ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``; a ResNet
backbone: ``DEFAULT``, ``IMAGENET1K_V1`` or ``ResNet50_Weights.IMAGENET1K_V1``.
"""
import os
import re
from collections.abc import Mapping
from typing import List, Optional
from urllib.parse import urlparse

import torch

__all__ = ["WeightsUnavailableError", "coco_category_names", "fetch_state_dict", "is_weights_enum",
           "is_weights_name", "weights_enum"]

WEIGHT_FILE_EXTENSIONS = (".pt", ".pth", ".ckpt", ".bin")


class WeightsUnavailableError(OSError):
    """torchvision weights that are neither in torch hub's cache nor downloadable; the message
    says which file to fetch and where to put it."""


def is_weights_enum(w) -> bool:
    from torchvision.models._api import WeightsEnum

    return isinstance(w, WeightsEnum)


def is_weights_name(spec) -> bool:
    """DEFAULT, COCO_V1, ResNet50_Weights.IMAGENET1K_V1: dotted identifiers, never a file name."""
    return isinstance(spec, str) and bool(spec) and all(part.isidentifier() for part in spec.split(".")) \
        and not spec.endswith(WEIGHT_FILE_EXTENSIONS)


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


def coco_category_names() -> Optional[List[str]]:
    """The 91 class names of torchvision's COCO models (None where torchvision lacks them)."""
    try:
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

        return list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    except Exception:  # noqa: BLE001  names are a nicety
        return None
