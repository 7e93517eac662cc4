"""Mask R-CNN's mask targets from packed instance masks (torch.ops.maskrcnn_fast.packed_mask_targets):
torchvision's nearest resize of the masks and its ``project_masks_on_boxes`` in one op, for the
boxes of all images, read straight from each instance's crop (maskrcnn_fast.structures.PackedMasks)
without a full-size mask, resized mask or float copy."""
import torch
from torch import Tensor

__all__ = ["packed_mask_targets"]


def packed_mask_targets(data: Tensor, instances: Tensor, boxes: Tensor, instance_index: Tensor, M: int) -> Tensor:
    """Crops and resizes each box's instance mask to ``M x M``, from the packed crops.

    Instance ``n`` (row ``n`` of ``instances``) is the ``height x width`` crop at ``data[offset:]``
    (row-major), placed at ``(x0, y0)`` in its ``H x W`` source frame and resized to ``H' x W'``.
    The result for box ``k`` is bitwise :func:`mask_targets` of the dense equivalent::

        dense = zeros(H, W); dense[y0:y0 + height, x0:x0 + width] = crop
        resized = F.interpolate(dense[None, None].float(), size=(H', W'), mode="nearest")[0, 0].byte()
        mask_targets([resized[None]], boxes[k:k + 1], [0], M)

    i.e. torchvision's ``project_masks_on_boxes`` after torchvision's resize of the masks
    (``scale_factor`` with ``recompute_scale_factor=True`` resizes by the same nearest rule as
    ``size=(H', W')``). The resize is folded into the sampling: each roi_align tap on the resized
    plane reads the source pixel the nearest rule maps it to.

    Args:
        data (Tensor[D], uint8 or bool): the crops, concatenated (values are read as numbers, as
            in the float copy torchvision makes; masks are 0/1).
        instances (Tensor[N, 9], int64): per instance (offset into data, x0, y0, width, height,
            H, W, H', W'); the instances of all images, concatenated. An empty mask has width =
            height = 0 (its targets are 0).
        boxes (Tensor[K, 4]): x1, y1, x2, y2 in the resized frame of each box's instance. Float,
            double, half or bfloat16 (half and bfloat16 are computed in float32).
        instance_index (Tensor[K], int64): the row of ``instances`` of each box.
        M (int): output size, > 0.

    Returns:
        Tensor[K, M, M] in boxes' dtype. No gradient.

    A box with a NaN or infinite coordinate gives zeros. A crop outside its source frame or past
    the end of ``data``, a negative size or an index out of range raises on the CPU naming the
    argument (``instances row n: ...``, ``instance_index``); on CUDA, where checking would need a
    device sync, those boxes get zeros.
    """
    return torch.ops.maskrcnn_fast.packed_mask_targets(
        data, instances, boxes.detach(), instance_index, M)  # targets: no gradient


@torch.library.register_fake("maskrcnn_fast::packed_mask_targets")
def _packed_mask_targets_fake(data, instances, boxes, instance_index, size):
    torch._check(boxes.dim() == 2 and boxes.shape[-1] == 4, lambda: f"boxes must be Tensor[K, 4], got {boxes.shape}")
    torch._check(boxes.dtype.is_floating_point, lambda: f"boxes must be a floating point tensor, got {boxes.dtype}")
    torch._check(
        data.dim() == 1 and data.dtype in (torch.uint8, torch.bool),
        lambda: f"data must be a uint8 or bool Tensor[D], got {data.dtype} {tuple(data.shape)}",
    )
    torch._check(
        instances.dim() == 2 and instances.shape[-1] == 9 and instances.dtype == torch.int64,
        lambda: f"instances must be an int64 Tensor[N, 9], got {instances.dtype} {tuple(instances.shape)}",
    )
    torch._check(
        instance_index.dim() == 1 and instance_index.dtype == torch.int64,
        lambda: f"instance_index must be an int64 Tensor[K], got {instance_index.dtype} {tuple(instance_index.shape)}",
    )
    return boxes.new_empty((boxes.shape[0], size, size))
