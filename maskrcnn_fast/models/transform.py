"""Input and output transforms of Mask R-CNN: normalise, resize, batch, and back.

Same results as torchvision's ``GeneralizedRCNNTransform``: the resize uses the same
``F.interpolate`` call (bilinear, ``scale_factor`` with ``recompute_scale_factor=True``), the
batch is zero-padded to a multiple of ``size_divisible``, and ``postprocess`` scales the boxes back
with float32 ratios and pastes the masks into the original image.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..structures import PackedMasks

__all__ = ["ImageList", "ImageTransform", "resize_boxes", "resize_masks"]


class ImageList:
    """A padded batch and the size of each image inside it.

    tensors: Tensor[N, C, H_pad, W_pad]; image_sizes: list of (h, w), the resized (unpadded) size.
    """

    def __init__(self, tensors: Tensor, image_sizes: List[Tuple[int, int]]):
        self.tensors = tensors
        self.image_sizes = image_sizes

    def to(self, device):
        return ImageList(self.tensors.to(device), self.image_sizes)

    def sizes_tensor(self) -> Tensor:
        """The image sizes as int64 Tensor[N, 2] (h, w) on the batch's device."""
        return torch.tensor(self.image_sizes, dtype=torch.int64, device=self.tensors.device).reshape(-1, 2)


def resize_boxes(boxes: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """boxes (Tensor[N, 4]) x1, y1, x2, y2 in ``original_size`` (h, w) pixels -> ``new_size`` pixels.

    The ratios are float32 tensor divisions, as torchvision computes them, so the boxes are
    bit-identical to torchvision's.
    """
    ratio_h, ratio_w = (
        torch.tensor(n, dtype=torch.float32, device=boxes.device)
        / torch.tensor(o, dtype=torch.float32, device=boxes.device)
        for n, o in zip(new_size, original_size)
    )
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def resize_masks(masks: Union[Tensor, PackedMasks], size: Tuple[int, int], kw: Dict) -> Union[Tensor, PackedMasks]:
    """A target's masks resized with the image to ``size`` (h, w), as torchvision's transform
    resizes them: ``F.interpolate(masks[:, None].float(), **kw)`` (nearest), then uint8.

    A PackedMasks is resized lazily (its ``out_size``: torchvision's ``scale_factor`` with
    ``recompute_scale_factor=True`` is nearest to the resized image's size). Dense uint8/bool
    masks become a PackedMasks first when that is smaller than them (the masks of a few objects
    in a large image, as a rule), before any float copy; the mask targets of both are the same,
    bit for bit. Other masks (or a PackedMasks that would not be smaller) take torchvision's path.
    """
    if isinstance(masks, PackedMasks):
        return masks.resize(*size)
    if masks.dtype in (torch.uint8, torch.bool) and masks.dim() == 3 and masks.shape[0]:
        packed = PackedMasks.from_dense(masks)
        if packed.nbytes < masks.numel():
            return packed.resize(*size)
    return F.interpolate(masks[:, None].float(), **kw)[:, 0].byte()


class ImageTransform(nn.Module):
    """Normalises, resizes and batches images (and their targets); maps detections back.

    min_size (int or tuple of int): the shorter side after resizing; in training one is drawn
    per image (with torch's RNG, as torchvision draws it). max_size (int): the cap on the longer
    side. image_mean, image_std (3 floats). size_divisible (int): the padded batch's H and W are
    multiples of it. fixed_size ((w, h) or None): resize to exactly this size instead.
    paste_masks: callable(masks [N,1,M,M], boxes [N,4], (h, w)) -> [N,1,h,w]; the model passes
    its op set's (maskrcnn_fast.ops.paste_masks or its reference).
    """

    def __init__(
        self,
        min_size,
        max_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        size_divisible: int = 32,
        fixed_size: Optional[Tuple[int, int]] = None,
        paste_masks: Callable = ops.paste_masks,
    ):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.size_divisible = size_divisible
        self.fixed_size = fixed_size
        self.paste_masks = paste_masks

    def forward(
        self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None
    ) -> Tuple[ImageList, Optional[List[Dict[str, Tensor]]]]:
        """images: list of Tensor[C, H, W] float; targets: list of dicts (boxes [K, 4] in pixels,
        masks [K, H, W]), copied, never modified. Returns the padded batch and resized targets."""
        if targets is not None:
            targets = [dict(t) for t in targets]
        resized = []
        for i, image in enumerate(images):
            image = self.normalize(image)
            image, target = self.resize(image, targets[i] if targets is not None else None)
            resized.append(image)
            if targets is not None:
                targets[i] = target
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in resized]
        return ImageList(self.batch_images(resized), sizes), targets

    def normalize(self, image: Tensor) -> Tensor:
        if not image.is_floating_point():
            raise TypeError(f"images must be floating point (values in [0, 1]), got {image.dtype}")
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def _choose_min_size(self) -> int:
        if not self.training:
            return self.min_size[-1]
        # torchvision draws with torch's RNG (not Python's), so seeded runs draw alike
        return self.min_size[int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())]

    def resize(self, image: Tensor, target: Optional[Dict[str, Tensor]] = None):
        h, w = image.shape[-2:]
        min_size = self._choose_min_size()
        if self.fixed_size is not None:
            kw = dict(size=[self.fixed_size[1], self.fixed_size[0]])
        else:
            scale = min(min_size / min(h, w), self.max_size / max(h, w))
            kw = dict(scale_factor=scale, recompute_scale_factor=True)
        image = F.interpolate(image[None], mode="bilinear", align_corners=False, **kw)[0]
        if target is None:
            return image, target
        if "masks" in target:
            target["masks"] = resize_masks(target["masks"], tuple(image.shape[-2:]), kw)
        target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target

    def batch_images(self, images: List[Tensor]) -> Tensor:
        """Zero-pads to the largest H and W of the batch, rounded up to size_divisible.

        One zero batch, each image copied into its slot in place; when an image requires
        gradients (and grad mode is on) the copies are recorded by autograd, so gradients reach
        the input images, as with torchvision's transform."""
        c = max(im.shape[0] for im in images)
        stride = float(self.size_divisible)
        h = int(math.ceil(max(im.shape[1] for im in images) / stride) * stride)
        w = int(math.ceil(max(im.shape[2] for im in images) / stride) * stride)
        batch = images[0].new_zeros((len(images), c, h, w))
        # indexed slots, not iteration over the batch: iterating unbinds it into views that
        # autograd cannot record an in-place copy into
        for i, im in enumerate(images):
            batch[i, : im.shape[0], : im.shape[1], : im.shape[2]].copy_(im)
        return batch

    def postprocess(
        self,
        result: List[Dict[str, Tensor]],
        image_shapes: List[Tuple[int, int]],
        original_image_sizes: List[Tuple[int, int]],
        paste: bool = True,
    ) -> List[Dict[str, Tensor]]:
        """Boxes back to original pixels; masks [N, 1, M, M] pasted to [N, 1, H, W]. paste False:
        the masks are not pasted but handed on as ``box_masks`` [N, 1, M, M] (the probabilities
        inside each box; see ``MaskRCNN(paste_masks_in_image=False)``)."""
        if self.training:
            return result
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
            if "masks" in pred:
                if paste:
                    pred["masks"] = self.paste_masks(pred["masks"], pred["boxes"], o_im_s)
                else:
                    pred["box_masks"] = pred.pop("masks")
        return result

    def extra_repr(self) -> str:
        return (
            f"mean={self.image_mean}, std={self.image_std}, min_size={self.min_size}, "
            f"max_size={self.max_size}, size_divisible={self.size_divisible}"
        )
