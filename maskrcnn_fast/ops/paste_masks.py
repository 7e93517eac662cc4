"""Pasting M x M mask probabilities into image-sized masks: torchvision's paste_masks_in_image
as one fused op (torch.ops.maskrcnn_fast.paste_masks) for all masks of all images."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["paste_masks", "paste_masks_batched"]


def paste_masks(
    masks: Tensor,
    boxes: Tensor,
    img_shape: Tuple[int, int],
    padding: int = 1,
    threshold: Optional[float] = None,
) -> Tensor:
    """Pastes each mask into its box of one image, as torchvision's ``paste_masks_in_image``.

    Each mask is padded by ``padding`` zeros, its box is scaled about its centre by
    ``(M + 2 * padding) / M`` and truncated to integers, and the padded mask is resized
    (bilinear, ``align_corners=False``) to the box and written into a zero image, clipped to
    the image. Every output pixel is computed directly from the small mask.

    Args:
        masks (Tensor[N, 1, M, M] or Tensor[N, M, M]): mask probabilities (float, double, half,
            bfloat16).
        boxes (Tensor[N, 4]): x1, y1, x2, y2 in image pixels (any floating dtype; the box
            arithmetic is done in this dtype, as torchvision does).
        img_shape (tuple[int, int]): (height, width) of the image.
        padding (int): zero padding around each mask, >= 0.
        threshold (float, optional): when given (>= 0), returns ``probability > threshold`` as
            uint8 instead of the probabilities, without a float intermediate.

    Returns:
        Tensor[N, 1, H, W]: masks' dtype, or uint8 with a threshold.

    Differentiable with respect to ``masks`` (without a threshold), as torchvision's
    interpolation is. Under CUDA autocast it pastes in float32 and returns float32, as
    torchvision's ``interpolate`` does there.

    Boxes whose expanded coordinates are NaN, infinite or beyond +-2**60 give an all-zero mask.
    torchvision raises for boxes lying wholly left of or above the image; here they give an
    all-zero mask too.
    """
    h, w = int(img_shape[0]), int(img_shape[1])
    out = torch.ops.maskrcnn_fast.paste_masks(masks, boxes, None, None, h, w, padding, threshold)
    return out[:, None]


def paste_masks_batched(
    masks: Tensor,
    boxes: Tensor,
    image_index: Tensor,
    image_sizes: Union[Tensor, Sequence[Tuple[int, int]]],
    padding: int = 1,
    threshold: Optional[float] = None,
    out_size: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """Pastes the masks of many images in one launch, into one padded tensor.

    Args:
        masks (Tensor[N, 1, M, M] or Tensor[N, M, M]): the masks of all images, concatenated.
        boxes (Tensor[N, 4]): x1, y1, x2, y2 in the pixels of each mask's image.
        image_index (Tensor[N], int64): which image each mask belongs to, in [0, B).
        image_sizes (Tensor[B, 2] int64 or list of (h, w)): each image's (height, width).
        padding (int): zero padding around each mask, >= 0.
        threshold (float, optional): as in :func:`paste_masks`: uint8 ``probability > threshold``.
        out_size (tuple[int, int], optional): (H, W) of the output planes. Default: the
            largest height and width of ``image_sizes``; for a tensor ``image_sizes`` that
            reads it on the host (a device sync on CUDA), so pass ``out_size`` to avoid it.

    Returns:
        Tensor[N, 1, H, W]: mask ``i`` in ``out[i, :, :h, :w]`` (``(h, w)`` its image's size)
        equals torchvision's ``paste_masks_in_image`` for that image; pixels outside its image
        are 0. Images larger than ``out_size`` are cropped to it.
    """
    if isinstance(image_sizes, Tensor):
        sizes = image_sizes
        if out_size is None:
            if sizes.shape[0] == 0:
                out_size = (0, 0)
            else:
                hmax, wmax = sizes.amax(0).tolist()
                out_size = (int(hmax), int(wmax))
    else:
        pairs: List[Tuple[int, int]] = [(int(h), int(w)) for h, w in image_sizes]
        if out_size is None:
            out_size = (max((h for h, _ in pairs), default=0), max((w for _, w in pairs), default=0))
        sizes = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2).to(masks.device)
    out = torch.ops.maskrcnn_fast.paste_masks(
        masks, boxes, image_index, sizes, int(out_size[0]), int(out_size[1]), padding, threshold
    )
    return out[:, None]


@torch.library.register_fake("maskrcnn_fast::paste_masks")
def _paste_masks_fake(masks, boxes, image_index, image_sizes, out_height, out_width, padding=1,
                      threshold=None):
    torch._check(masks.dim() == 3 or (masks.dim() == 4 and masks.shape[1] == 1),
                 lambda: f"masks must be Tensor[N, M, M] or Tensor[N, 1, M, M], got {masks.shape}")
    torch._check(boxes.dim() == 2 and boxes.shape[-1] == 4,
                 lambda: f"boxes must be Tensor[N, 4], got {boxes.shape}")
    dtype = torch.uint8 if threshold is not None else masks.dtype
    return masks.new_empty((masks.shape[0], out_height, out_width), dtype=dtype)


# ---- autograd ------------------------------------------------------------------------------
# Pasting is linear in the mask probabilities (bilinear resize, then placement; the boxes are
# truncated to integers and carry no gradient, as in torchvision). The backward is its adjoint,
# taken through the pure-PyTorch reference paste (the same weights, two batched matmuls).


def _paste_setup_context(ctx, inputs, output):
    masks, boxes, image_index, image_sizes, out_height, out_width, padding, threshold = inputs
    ctx.save_for_backward(masks, boxes, image_index, image_sizes)
    ctx.args = (int(out_height), int(out_width), int(padding))
    ctx.threshold = threshold


def _paste_backward(ctx, grad):
    from .reference.paste_masks import _paste

    masks, boxes, image_index, image_sizes = ctx.saved_tensors
    if ctx.threshold is not None or not ctx.needs_input_grad[0]:
        return (None,) * 8
    out_h, out_w, padding = ctx.args
    with torch.enable_grad():
        m = masks.detach().requires_grad_(True)
        out = _paste(m, boxes.detach(), image_index, image_sizes, out_h, out_w, padding, None)
        (g,) = torch.autograd.grad(out, m, grad)
    return (g,) + (None,) * 7


torch.library.register_autograd(
    "maskrcnn_fast::paste_masks", _paste_backward, setup_context=_paste_setup_context
)
