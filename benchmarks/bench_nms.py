"""nms and batched_nms at RPN / box-head sizes.

Boxes in an 800x1088 image, like RPN proposals: half jittered around 20 objects (these suppress
each other), half anywhere (background proposals, mostly kept); sides 8..440 px, clipped to the
image. Distinct scores. nms at 1k, 4k, 12k boxes with IoU threshold 0.7 (the RPN's);
batched_nms at 10k and 100k boxes in 80 categories with threshold 0.5 (the box head's).
torchvision's batched_nms takes its per-category loop above 4000 coordinates on the CPU
(1000 boxes) and its coordinate-offset path on CUDA below 100k boxes.
"""
import pytest
import torch
import torchvision
from common import IMPLS, run

import maskrcnn_fast  # noqa: F401
from maskrcnn_fast.ops import batched_nms, nms
from maskrcnn_fast.ops import reference

IMAGE_H, IMAGE_W = 800, 1088


def _boxes(n, g, objects=20):
    def random_boxes(k):
        cx, cy = torch.rand(k, generator=g) * IMAGE_W, torch.rand(k, generator=g) * IMAGE_H
        wh = torch.exp(torch.empty(k, 2).uniform_(2.08, 6.09, generator=g))
        return torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], 1)

    near = n // 2
    base = random_boxes(objects)[torch.randint(0, objects, (near,), generator=g)]
    size = (base[:, 2:] - base[:, :2]).repeat(1, 2)
    jittered = base + (torch.rand(near, 4, generator=g) - 0.5) * 0.3 * size
    b = torch.cat([jittered, random_boxes(n - near)])[torch.randperm(n, generator=g)]
    b[:, 0::2] = b[:, 0::2].clamp(0, IMAGE_W)
    b[:, 1::2] = b[:, 1::2].clamp(0, IMAGE_H)
    return b


def _inputs(n, classes, device):
    g = torch.Generator().manual_seed(0)
    boxes = _boxes(n, g)
    scores = torch.randperm(n, generator=g).float() / n
    idxs = torch.randint(0, classes, (n,), generator=g)
    return boxes.to(device), scores.to(device), idxs.to(device)


NMS = {"fused": nms, "torch": reference.nms, "torchvision": torchvision.ops.nms}
BATCHED = {"fused": batched_nms, "torch": reference.batched_nms, "torchvision": torchvision.ops.batched_nms}


@pytest.mark.parametrize("n", [1000, 4000, 12000], ids=["1k", "4k", "12k"])
@pytest.mark.parametrize("impl", IMPLS)
def bench_nms(benchmark, impl, n, device):
    boxes, scores, _ = _inputs(n, 1, device)
    fn = NMS[impl]
    run(benchmark, group=f"nms[{n // 1000}k]", impl=impl, fn=lambda: fn(boxes, scores, 0.7), device=device)


@pytest.mark.parametrize("n", [10_000, 100_000], ids=["10k", "100k"])
@pytest.mark.parametrize("impl", IMPLS)
def bench_batched_nms(benchmark, impl, n, device):
    boxes, scores, idxs = _inputs(n, 80, device)
    fn = BATCHED[impl]
    run(
        benchmark,
        group=f"batched_nms[{n // 1000}k/80cls]",
        impl=impl,
        fn=lambda: fn(boxes, scores, idxs, 0.5),
        device=device,
    )
