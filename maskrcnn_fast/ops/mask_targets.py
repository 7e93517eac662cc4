"""Mask R-CNN's mask targets: torchvision's ``project_masks_on_boxes`` for the proposals of all
images in one op (torch.ops.maskrcnn_fast.mask_targets), read straight from the uint8/bool
ground-truth masks instead of a full-size float copy of them."""
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["mask_targets", "project_masks_on_boxes"]


def _image_index(per_image: Sequence[Tensor], device) -> Tensor:
    # From the list lengths (host-side shapes): no device sync.
    parts = [torch.full((b.shape[0],), i, dtype=torch.int64, device=device) for i, b in enumerate(per_image)]
    if not parts:
        return torch.empty(0, dtype=torch.int64, device=device)
    return torch.cat(parts)


def mask_targets(
    gt_masks: Sequence[Tensor],
    boxes: Union[Tensor, Sequence[Tensor]],
    matched_idxs: Union[Tensor, Sequence[Tensor]],
    M: int,
    image_index: Optional[Tensor] = None,
) -> Tensor:
    """Crops and resizes each proposal's ground-truth mask to ``M x M``, for all images at once.

    For one image this is torchvision's ``project_masks_on_boxes(gt_masks, boxes, matched_idxs,
    M)``, i.e. ``roi_align(gt_masks[:, None].float(), rois, (M, M), spatial_scale=1.0,
    sampling_ratio=-1, aligned=False)``; the masks are read as they are stored, and the result
    is bitwise that roi_align on ``gt_masks.to(boxes.dtype)``.

    Args:
        gt_masks (list of Tensor[G_i, H_i, W_i], uint8 or bool): each image's ground-truth masks
            (images may differ in size; any strides). Masks of another dtype are accepted too,
            through roi_align on their copy in boxes' dtype (slower; syncs on CUDA).
        boxes (list of Tensor[K_i, 4], or Tensor[K, 4]): x1, y1, x2, y2 in input pixels, per image
            or all images concatenated (then ``image_index`` says whose they are). Float,
            double, half or bfloat16 (half and bfloat16 are computed in float32).
        matched_idxs (list of Tensor[K_i], or Tensor[K], int64): the ground-truth mask of each
            box within its image, in the same layout as ``boxes``.
        M (int): output size, > 0.
        image_index (Tensor[K], int64, optional): the image of each box when ``boxes`` is one
            tensor; default all image 0.

    Returns:
        Tensor[K, M, M] in boxes' dtype: the targets of the boxes of image 0, then image 1, ...
        (or in the order of the rows of ``boxes``). No gradient.

    As in our roi_align, the adaptive sampling grid is capped at 1024 samples per side
    (torchvision's is unbounded): a box over 1024 * M pixels tall or wide samples more coarsely
    than torchvision.

    A box with a NaN or infinite coordinate gives zeros. An index out of range raises
    (``image_index`` / ``matched_index``) on the CPU; on CUDA, where checking would need a
    device sync, that box gets zeros.
    """
    if isinstance(boxes, Tensor):
        if not isinstance(matched_idxs, Tensor):
            raise ValueError("matched_idxs must be a Tensor[K] when boxes is a Tensor[K, 4]")
        flat_boxes, flat_idx = boxes, matched_idxs
        if image_index is None:
            image_index = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    else:
        boxes, matched_idxs = list(boxes), list(matched_idxs)
        if image_index is not None:
            raise ValueError("image_index is only for boxes given as one Tensor[K, 4]")
        if len(boxes) != len(gt_masks) or len(matched_idxs) != len(gt_masks):
            raise ValueError(
                f"boxes and matched_idxs must have one entry per image ({len(gt_masks)}), "
                f"got {len(boxes)} and {len(matched_idxs)}"
            )
        device = boxes[0].device if boxes else (gt_masks[0].device if len(gt_masks) else None)
        if not boxes:
            return torch.empty((0, M, M), device=device)
        flat_boxes = torch.cat(boxes)
        flat_idx = torch.cat([i.to(torch.int64) for i in matched_idxs])
        image_index = _image_index(boxes, flat_boxes.device)
    gt_masks = list(gt_masks)
    flat_boxes, flat_idx = flat_boxes.detach(), flat_idx.to(torch.int64)  # targets: no gradient
    if all(m.dtype in (torch.uint8, torch.bool) for m in gt_masks):
        return torch.ops.maskrcnn_fast.mask_targets(gt_masks, flat_boxes, image_index, flat_idx, M)
    return _via_roi_align(gt_masks, flat_boxes, image_index, flat_idx, M)


def _via_roi_align(gt_masks: List[Tensor], boxes: Tensor, image_index: Tensor, matched: Tensor, M: int) -> Tensor:
    """Masks of other dtypes (soft float masks, say): roi_align on their copy in boxes' dtype,
    torchvision's way, one image at a time (finding each image's boxes syncs with the device)."""
    from .roi_align import roi_align

    out = boxes.new_zeros((boxes.shape[0], M, M))
    for i, m in enumerate(gt_masks):
        sel = torch.nonzero(image_index == i).flatten()
        if sel.numel():
            rois = torch.cat([matched[sel, None].to(boxes.dtype), boxes[sel]], 1)
            out[sel] = roi_align(m[:, None].to(boxes.dtype), rois, (M, M), 1.0, -1, False)[:, 0]
    return out


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, M: int) -> Tensor:
    """torchvision's ``project_masks_on_boxes`` for one image: gt_masks (Tensor[G, H, W], uint8
    or bool), boxes (Tensor[K, 4]), matched_idxs (Tensor[K]) -> Tensor[K, M, M] in boxes' dtype.
    See :func:`mask_targets`."""
    return mask_targets([gt_masks], boxes, matched_idxs, M)


@torch.library.register_fake("maskrcnn_fast::mask_targets")
def _mask_targets_fake(masks, boxes, image_index, matched_index, size):
    torch._check(boxes.dim() == 2 and boxes.shape[-1] == 4, lambda: f"boxes must be Tensor[K, 4], got {boxes.shape}")
    torch._check(boxes.dtype.is_floating_point, lambda: f"boxes must be a floating point tensor, got {boxes.dtype}")
    for name, t in (("image_index", image_index), ("matched_index", matched_index)):
        torch._check(
            t.dim() == 1 and t.dtype == torch.int64,
            lambda: f"{name} must be an int64 Tensor[K], got {t.dtype} {tuple(t.shape)}",
        )
    for i, m in enumerate(masks):
        torch._check(
            m.dim() == 3 and m.dtype in (torch.uint8, torch.bool),
            lambda: f"masks[{i}] must be a uint8 or bool Tensor[G, H, W], got {m.dtype} {tuple(m.shape)}",
        )
    return boxes.new_empty((boxes.shape[0], size, size))
