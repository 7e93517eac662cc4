"""Joint image/target transforms: each is ``t(image, target) -> (image, target)``.

image is float32 Tensor[3, H, W]; target follows the detection format (``boxes`` [K, 4] x1, y1,
x2, y2 pixels, ``masks`` uint8 [K, H, W] or a maskrcnn_fast.structures.PackedMasks, whose
``flip(-1)`` mirrors each crop in its box); a target of None passes through.
"""
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["Compose", "RandomHorizontalFlip", "ToTensor", "hflip"]


class Compose:
    """Applies transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, target=None):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


def hflip(image: torch.Tensor, target: Optional[Dict] = None):
    """Mirrors image Tensor[..., H, W] left-right, with its boxes and masks (dense or PackedMasks:
    the same masks either way).

    A box [x1, x2) over pixel columns becomes [W - x2, W - x1): flipping twice is the identity and
    a mask's tight box stays tight.
    """
    width = image.shape[-1]
    image = image.flip(-1)
    if target is None:
        return image, None
    target = dict(target)
    if "boxes" in target:
        b = target["boxes"]
        target["boxes"] = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image, target


class RandomHorizontalFlip:
    """Flips image, boxes and masks together with probability ``p``.

    Args:
        p (float): flip probability.
        generator (torch.Generator, optional): the coin's RNG; torch's global RNG when None
            (per-worker seeded by the DataLoader).
    """

    def __init__(self, p: float = 0.5, generator: Optional[torch.Generator] = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, image, target=None):
        if torch.rand((), generator=self.generator).item() < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ToTensor:
    """PIL image, HxWx3 uint8 array or uint8 Tensor[3, H, W] -> float32 Tensor[3, H, W] in
    [0, 1]; a floating tensor passes as float32. Target tensors are left as they are."""

    def __call__(self, image, target=None):
        if isinstance(image, Image.Image):
            image = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
        elif isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image array must be [H, W, 3], got {image.shape}")
            image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"image must be a PIL image, an array or a Tensor, got {type(image).__name__}")
        if image.dtype == torch.uint8:
            image = image.to(torch.float32).div_(255.0)
        elif image.is_floating_point():
            image = image.to(torch.float32)
        else:
            raise TypeError(f"image must be uint8 or floating point, got {image.dtype}")
        return image, target

    def __repr__(self) -> str:
        return "ToTensor()"
