"""Box decoding (+ clip to the image) and encoding at the sizes of an R50-FPN Mask R-CNN."""
import math

import pytest
import torch
from common import IMPLS, run
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.ops import clip_boxes_to_image

from maskrcnn_fast.ops import decode_boxes, encode_boxes
from maskrcnn_fast.ops import reference as ref

IMAGE = (800, 1088)
CLIP = math.log(1000.0 / 16)
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
RPN_ANCHORS = 3 * (200 * 272 + 100 * 136 + 50 * 68 + 25 * 34 + 13 * 17)  # 217413

# group suffix -> (K, classes, weights)
DECODE = {
    "rpn 217k x 4": (RPN_ANCHORS, 1, RPN_WEIGHTS),
    "head 1000 x 364": (1000, 91, HEAD_WEIGHTS),
}
ENCODE = {
    "rpn 217k": (RPN_ANCHORS, RPN_WEIGHTS),
    "head 1024": (1024, HEAD_WEIGHTS),
}


def _boxes(k, device, gen):
    xy = torch.rand(k, 2, generator=gen) * torch.tensor([IMAGE[1], IMAGE[0]])
    wh = torch.rand(k, 2, generator=gen) * 300 + 4
    return torch.cat([xy, xy + wh], dim=1).to(device)


@pytest.mark.parametrize("size", list(DECODE))
@pytest.mark.parametrize("impl", IMPLS)
def bench_box_decode(benchmark, device, impl, size):
    """Decode and clip to the image: RPN proposals and per-class box-head detections."""
    k, c, weights = DECODE[size]
    gen = torch.Generator().manual_seed(0)
    boxes = _boxes(k, device, gen)
    codes = (torch.randn(k, 4 * c, generator=gen) * 0.5).to(device)
    if impl == "fused":
        fn = lambda: decode_boxes(codes, boxes, weights, CLIP, IMAGE)  # noqa: E731
    elif impl == "torch":
        fn = lambda: ref.decode_boxes(codes, boxes, weights, CLIP, IMAGE)  # noqa: E731
    else:
        coder = TVBoxCoder(weights)
        fn = lambda: clip_boxes_to_image(  # noqa: E731
            coder.decode_single(codes, boxes).view(k, -1, 4), IMAGE)
    run(benchmark, group=f"box_decode[{size}]", impl=impl, fn=fn, device=device)


@pytest.mark.parametrize("size", list(ENCODE))
@pytest.mark.parametrize("impl", IMPLS)
def bench_box_encode(benchmark, device, impl, size):
    """Regression targets: every anchor against its matched box (RPN), sampled ROIs (head)."""
    k, weights = ENCODE[size]
    gen = torch.Generator().manual_seed(0)
    gt, proposals = _boxes(k, device, gen), _boxes(k, device, gen)
    if impl == "fused":
        fn = lambda: encode_boxes(gt, proposals, weights)  # noqa: E731
    elif impl == "torch":
        fn = lambda: ref.encode_boxes(gt, proposals, weights)  # noqa: E731
    else:
        coder = TVBoxCoder(weights)
        fn = lambda: coder.encode_single(gt, proposals)  # noqa: E731
    run(benchmark, group=f"box_encode[{size}]", impl=impl, fn=fn, device=device)
