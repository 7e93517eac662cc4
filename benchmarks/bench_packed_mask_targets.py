"""packed_mask_targets: the mask head's training targets of one dense 1024 x 1024 image with 500
small round ground-truth objects (radius 6-14 px) stored as packed crops, resized to 800 x 800 by
the model's transform, 512 positive proposals, M = 28.

torchvision's path is its transform's mask resize (the full-size uint8 masks to float, nearest
interpolate, back to uint8, as ``_resize_image_and_masks`` does) then ``project_masks_on_boxes`` (another
float copy); ours reads the crops, the resize folded into the sampling; torch is the pure-PyTorch
reference on the same crops.
"""
import pytest
import torch
from common import IMPLS, run
from torchvision.models.detection.roi_heads import project_masks_on_boxes

import maskrcnn_fast.ops as mf
from maskrcnn_fast.ops import reference

SIZE, RESIZED, OBJECTS, POS, M = 1024, 800, 500, 512, 28


def _inputs(device):
    g = torch.Generator().manual_seed(0)
    radius = torch.rand(OBJECTS, generator=g) * 8 + 6
    centre = torch.rand(OBJECTS, 2, generator=g) * (SIZE - 2 * 14) + 14
    crops, rows, end = [], [], 0
    for (cx, cy), r in zip(centre.tolist(), radius.tolist()):
        x0, y0 = int(cx - r), int(cy - r)
        x1, y1 = int(cx + r) + 1, int(cy + r) + 1
        ys = torch.arange(y0, y1, dtype=torch.float32)[:, None] + 0.5
        xs = torch.arange(x0, x1, dtype=torch.float32)[None, :] + 0.5
        crop = (((xs - cx) ** 2 + (ys - cy) ** 2) <= r * r).to(torch.uint8)
        crops.append(crop.flatten())
        rows.append([end, x0, y0, x1 - x0, y1 - y0, SIZE, SIZE, RESIZED, RESIZED])
        end += crop.numel()
    data = torch.cat(crops)
    instances = torch.tensor(rows, dtype=torch.int64)
    # positives: ground-truth boxes (in the resized frame) jittered by up to 10% of their size
    scale = RESIZED / SIZE
    gt = torch.stack([instances[:, 1], instances[:, 2], instances[:, 1] + instances[:, 3],
                      instances[:, 2] + instances[:, 4]], 1).float() * scale
    idx = torch.randint(0, OBJECTS, (POS,), generator=g)
    wh = (gt[idx, 2:] - gt[idx, :2]).repeat(1, 2)
    boxes = gt[idx] + (torch.rand(POS, 4, generator=g) - 0.5) * 0.2 * wh
    return data.to(device), instances.to(device), boxes.to(device), idx.to(device)


def _dense(data, instances):
    """torchvision's target format: the full-size uint8 masks [OBJECTS, SIZE, SIZE]."""
    masks = torch.zeros(OBJECTS, SIZE, SIZE, dtype=torch.uint8, device=data.device)
    for n, (off, x0, y0, w, h) in enumerate(instances[:, :5].tolist()):
        masks[n, y0:y0 + h, x0:x0 + w] = data[off:off + w * h].reshape(h, w)
    return masks


def _fn(impl, data, instances, boxes, idx):
    if impl == "fused":
        return lambda: mf.packed_mask_targets(data, instances, boxes, idx, M)
    if impl == "torch":
        return lambda: reference.packed_mask_targets(data, instances, boxes, idx, M)
    masks = _dense(data, instances)

    def torchvision_path():
        # GeneralizedRCNNTransform's mask resize (_resize_image_and_masks' masks lines, its
        # scale factor for min_size 800 and max_size 1333), then maskrcnn_loss's
        # project_masks_on_boxes
        resized = torch.nn.functional.interpolate(masks[:, None].float(), scale_factor=RESIZED / SIZE,
                                                  recompute_scale_factor=True)[:, 0].byte()
        return project_masks_on_boxes(resized, boxes, idx, M)

    return torchvision_path


@pytest.mark.parametrize("impl", IMPLS)
def bench_packed_mask_targets(benchmark, device, impl):
    data, instances, boxes, idx = _inputs(device)
    run(benchmark, group=f"packed_mask_targets[{OBJECTS}@{SIZE}->{RESIZED}x{POS}]", impl=impl,
        fn=_fn(impl, data, instances, boxes, idx), device=device)
