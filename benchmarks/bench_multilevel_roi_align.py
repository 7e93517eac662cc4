"""MultiScaleRoIAlign of the R50-FPN box head: batch of 2 images of 800x1088, maps '0'..'3'
(200x272 .. 25x34, 256 channels, float32), 7x7 output, sampling_ratio 2; 1000 or 2000 ROIs per
image with proposal-like sizes (sqrt area log-uniform in 16..800 px, aspect 1:2..2:1), i.e.
about half on the finest level and the rest spread over the others.
"""
import math

import pytest
import torch
import torchvision
from common import IMPLS, run

from maskrcnn_fast.ops import MultiScaleRoIAlign
from maskrcnn_fast.ops import reference

IMAGE = (800, 1088)
NAMES = ["0", "1", "2", "3"]


def _boxes(n, g):
    h, w = IMAGE
    s = torch.exp(torch.empty(n).uniform_(math.log(16), math.log(800), generator=g))
    ar = torch.exp(torch.empty(n).uniform_(-math.log(2), math.log(2), generator=g))
    bw, bh = s * ar.sqrt(), s / ar.sqrt()
    cx, cy = torch.rand(n, generator=g) * w, torch.rand(n, generator=g) * h
    b = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    return b


def _inputs(rois_per_image, device):
    g = torch.Generator().manual_seed(0)
    feats = {
        n: torch.randn(2, 256, IMAGE[0] // 4 >> i, IMAGE[1] // 4 >> i, generator=g).to(device)
        for i, n in enumerate(NAMES)
    }
    boxes = [_boxes(rois_per_image, g).to(device) for _ in range(2)]
    return feats, boxes, [IMAGE, IMAGE]


@pytest.mark.parametrize("rois_per_image", [1000, 2000])
@pytest.mark.parametrize("impl", IMPLS)
def bench_multiscale_roi_align(benchmark, device, impl, rois_per_image):
    feats, boxes, shapes = _inputs(rois_per_image, device)
    if impl == "fused":
        m = MultiScaleRoIAlign(NAMES, 7, 2)
        fn = lambda: m(feats, boxes, shapes)
    elif impl == "torchvision":
        m = torchvision.ops.MultiScaleRoIAlign(NAMES, 7, 2)
        fn = lambda: m(feats, boxes, shapes)
    else:
        m = MultiScaleRoIAlign(NAMES, 7, 2)
        m(feats, [b[:1] for b in boxes], shapes)  # infers the scales, as the module does
        maps = list(feats.values())
        fn = lambda: reference.multilevel_roi_align(maps, boxes, 7, m.scales, 2)
    with torch.no_grad():
        run(benchmark, group=f"multiscale_roi_align[{rois_per_image}]", impl=impl, fn=fn,
            device=device)
