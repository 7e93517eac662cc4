"""detection_postprocess at R50-FPN test settings: 1000 proposals per image, 91 classes, box
coder weights (10, 10, 5, 5), score_thresh 0.05, NMS 0.5, 100 detections, batch 1 and 2.

Logits resemble a trained box head's: 40% of the ROIs lean to the background, 60% to one or two
of 20 object classes; about 1,500 (ROI, class) pairs per image pass 0.05 (torchvision then
takes its per-class NMS path, as with real detections). Proposals
cluster around 30 objects, as RPN proposals do, so the NMS suppresses most of them.
The torchvision side is RoIHeads.postprocess_detections (decode, softmax, filters,
batched_nms, top-k), on the same concatenated rows.
"""
import math

import pytest
import torch
from common import IMPLS, run
from torchvision.models.detection.roi_heads import RoIHeads

import maskrcnn_fast  # noqa: F401
from maskrcnn_fast.ops import detection_postprocess, reference

IMAGE_H, IMAGE_W = 800, 1088
P, C, D = 1000, 91, 100
WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _inputs(n, device):
    g = torch.Generator().manual_seed(0)
    objects = 30
    ctr = torch.rand(n, objects, 2, generator=g) * torch.tensor([IMAGE_W, IMAGE_H])
    size = torch.exp(torch.empty(n, objects, 2).uniform_(3.0, 6.0, generator=g))
    pick = torch.randint(0, objects, (n, P), generator=g)
    c = ctr.gather(1, pick[..., None].expand(-1, -1, 2))
    s = size.gather(1, pick[..., None].expand(-1, -1, 2)) * (1 + 0.3 * torch.randn(n, P, 2, generator=g)).abs()
    c = c + 0.2 * s * torch.randn(n, P, 2, generator=g)
    props = torch.cat([c - s / 2, c + s / 2], -1)
    props[..., 0::2] = props[..., 0::2].clamp(0, IMAGE_W)
    props[..., 1::2] = props[..., 1::2].clamp(0, IMAGE_H)
    logits = torch.randn(n * P, C, generator=g)
    obj_class = torch.randint(1, 21, (n * P,), generator=g)
    obj2 = torch.randint(1, 21, (n * P,), generator=g)
    is_obj = torch.rand(n * P, generator=g) < 0.6
    k = int(is_obj.sum())
    logits[~is_obj, 0] += 4.0
    logits[is_obj, obj_class[is_obj]] += 3.0 + 2 * torch.rand(k, generator=g)
    logits[is_obj, obj2[is_obj]] += 3.0 * torch.rand(k, generator=g)
    reg = torch.randn(n * P, 4 * C, generator=g) * 0.5
    sizes = torch.tensor([(IMAGE_H - 40 * i, IMAGE_W - 24 * i) for i in range(n)])
    return logits.to(device), reg.to(device), props.to(device), sizes.to(device)


@pytest.mark.parametrize("n", [1, 2], ids=["bs1", "bs2"])
@pytest.mark.parametrize("impl", IMPLS)
def bench_detection_postprocess(benchmark, impl, n, device):
    logits, reg, props, sizes = _inputs(n, device)
    counts = torch.full((n,), P, dtype=torch.long, device=device)
    if impl == "torchvision":
        heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, WEIGHTS, 0.05, 0.5, D)
        plist = list(props.unbind(0))
        shapes = [tuple(s) for s in sizes.tolist()]

        def fn():
            return heads.postprocess_detections(logits, reg, plist, shapes)
    else:
        op = detection_postprocess if impl == "fused" else reference.detection_postprocess

        def fn():
            return op(logits, reg, props, counts, sizes, WEIGHTS, math.log(1000 / 16), 0.05, 0.5, D)

    run(benchmark, group=f"detection_postprocess[bs{n}]", impl=impl, fn=fn, device=device)
