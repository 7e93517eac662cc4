"""paste_masks: 100 detections' 28 x 28 masks into one 800 x 1088 image (R50-FPN inference)."""
import pytest
import torch
from common import IMPLS, run
from torchvision.models.detection.roi_heads import paste_masks_in_image

import maskrcnn_fast.ops as mf
from maskrcnn_fast.ops import reference

H, W = 800, 1088


def _inputs(n, device):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(n, 1, 28, 28, generator=g)
    # Realistic detections: 20-400 px boxes, centres anywhere in the image.
    size = torch.rand(n, 2, generator=g) * 380 + 20
    centre = torch.rand(n, 2, generator=g) * torch.tensor([W, H])
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    return masks.to(device), boxes.to(device)


def _fn(impl, masks, boxes, threshold):
    if impl == "fused":
        return lambda: mf.paste_masks(masks, boxes, (H, W), threshold=threshold)
    if impl == "torch":
        return lambda: reference.paste_masks(masks, boxes, (H, W), threshold=threshold)
    if threshold is None:
        return lambda: paste_masks_in_image(masks, boxes, (H, W))
    return lambda: paste_masks_in_image(masks, boxes, (H, W)) > threshold


@pytest.mark.parametrize("impl", IMPLS)
def bench_paste_masks(benchmark, device, impl):
    masks, boxes = _inputs(100, device)
    run(benchmark, group="paste_masks[100]", impl=impl, fn=_fn(impl, masks, boxes, None),
        device=device)


@pytest.mark.parametrize("impl", IMPLS)
def bench_paste_masks_u8(benchmark, device, impl):
    masks, boxes = _inputs(100, device)
    run(benchmark, group="paste_masks_u8[100]", impl=impl, fn=_fn(impl, masks, boxes, 0.5),
        device=device)
