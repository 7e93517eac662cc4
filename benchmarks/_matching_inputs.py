"""Inputs of bench_box_iou and bench_match_boxes: R50-FPN anchors of an 800x1088 batch and
random ground truths / RPN-like proposals."""
import torch

from maskrcnn_fast.ops import reference

IMAGE_H, IMAGE_W = 800, 1088
GRIDS = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
SIZES = [32, 64, 128, 256, 512]


def anchors():
    """Tensor[217413, 4]: the anchors of all five levels (3 per location)."""
    cells = [reference.cell_anchors([s], [0.5, 1.0, 2.0]) for s in SIZES]
    strides = [(IMAGE_H // h, IMAGE_W // w) for h, w in GRIDS]
    return reference.grid_anchors(cells, GRIDS, strides)


def gt_boxes(n, g):
    """n random objects of 16 to 500 px a side, inside the image."""
    wh = torch.exp(torch.empty(n, 2).uniform_(2.77, 6.2, generator=g))
    x1 = torch.rand(n, generator=g) * (IMAGE_W - wh[:, 0])
    y1 = torch.rand(n, generator=g) * (IMAGE_H - wh[:, 1])
    return torch.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], 1)


def proposals(gt, n, g):
    """n proposals: half jittered around the objects, half anywhere."""
    near = n // 2
    base = gt[torch.randint(0, len(gt), (near,), generator=g)]
    size = (base[:, 2:] - base[:, :2]).repeat(1, 2)
    jittered = base + (torch.rand(near, 4, generator=g) - 0.5) * 0.5 * size
    far = gt_boxes(n - near, g)
    b = torch.cat([jittered, far])
    b[:, 0::2] = b[:, 0::2].clamp(0, IMAGE_W)
    b[:, 1::2] = b[:, 1::2].clamp(0, IMAGE_H)
    return b


def padded(rows):
    """list of Tensor[K_i, 4] -> Tensor[N, max K_i, 4] zero-padded, int64 counts [N]."""
    out = torch.zeros(len(rows), max(len(r) for r in rows), 4)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, torch.tensor([len(r) for r in rows])
