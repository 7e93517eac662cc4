"""mask_targets: the mask head's training targets of a batch of 2 images of 800 x 1088 with 15
ground-truth masks each and 128 positive proposals per image, M = 28 (R50-FPN training)."""
import pytest
import torch
from common import IMPLS, run
from torchvision.models.detection.roi_heads import project_masks_on_boxes

import maskrcnn_fast.ops as mf
from maskrcnn_fast.ops import reference

H, W = 800, 1088
IMAGES, GT, POS, M = 2, 15, 128, 28


def _inputs(device):
    g = torch.Generator().manual_seed(0)
    masks, boxes, idx = [], [], []
    ys = torch.arange(H, dtype=torch.float32)[None, :, None]
    xs = torch.arange(W, dtype=torch.float32)[None, None, :]
    for _ in range(IMAGES):
        # ground truth: ellipses filling boxes of 30-400 px anywhere in the image
        size = torch.rand(GT, 2, generator=g) * 370 + 30
        centre = torch.rand(GT, 2, generator=g) * torch.tensor([W, H])
        cx, cy = centre[:, 0, None, None], centre[:, 1, None, None]
        rx, ry = size[:, 0, None, None] / 2, size[:, 1, None, None] / 2
        masks.append((((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1).to(torch.uint8))
        gt_boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
        # positives: ground-truth boxes jittered by up to 10% of their size (IoU >= 0.5)
        i = torch.randint(0, GT, (POS,), generator=g)
        jitter = (torch.rand(POS, 4, generator=g) - 0.5) * 0.2 * size[i].repeat(1, 2)
        boxes.append(gt_boxes[i] + jitter)
        idx.append(i)
    return [m.to(device) for m in masks], [b.to(device) for b in boxes], [i.to(device) for i in idx]


def _fn(impl, masks, boxes, idx):
    if impl == "fused":
        return lambda: mf.mask_targets(masks, boxes, idx, M)
    if impl == "torch":
        return lambda: reference.mask_targets(masks, boxes, idx, M)
    # torchvision's maskrcnn_loss: one project_masks_on_boxes (with its float copy) per image
    return lambda: torch.cat([project_masks_on_boxes(m, b, i, M) for m, b, i in zip(masks, boxes, idx)])


@pytest.mark.parametrize("impl", IMPLS)
def bench_mask_targets(benchmark, device, impl):
    masks, boxes, idx = _inputs(device)
    run(benchmark, group=f"mask_targets[{IMAGES}x{POS}]", impl=impl, fn=_fn(impl, masks, boxes, idx),
        device=device)
