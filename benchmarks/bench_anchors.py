"""Anchors at R50-FPN sizes, alone and followed by the RPN decode (+ clip) of one image."""
import math

import pytest
import torch
from common import IMPLS, run
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import clip_boxes_to_image

from maskrcnn_fast.ops import AnchorGenerator, BoxCoder
from maskrcnn_fast.ops import reference as ref

IMAGE = (800, 1088)
GRIDS = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
SIZES = ((32,), (64,), (128,), (256,), (512,))
RATIOS = ((0.5, 1.0, 2.0),) * 5
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
CLIP = math.log(1000.0 / 16)


def _inputs(device):
    img = ImageList(torch.zeros(1, 1, *IMAGE, device=device), [IMAGE])
    # Only the shape of a feature map matters to the anchors: one channel keeps setup cheap.
    fms = [torch.zeros(1, 1, h, w, device=device) for h, w in GRIDS]
    return img, fms


def _anchor_fns(device):
    img, fms = _inputs(device)
    ours, tv = AnchorGenerator(SIZES, RATIOS), TVAnchorGenerator(SIZES, RATIOS)
    cells = [ref.cell_anchors(s, r, device=device) for s, r in zip(SIZES, RATIOS)]
    grids = [fm.shape[-2:] for fm in fms]
    return {
        "fused": lambda: ours(img, fms),
        "torch": lambda: ref.image_anchors(cells, IMAGE, grids),
        "torchvision": lambda: tv(img, fms),
    }


@pytest.mark.parametrize("impl", IMPLS)
def bench_anchors(benchmark, device, impl):
    fn = _anchor_fns(device)[impl]
    run(benchmark, group="anchors[5 levels]", impl=impl, fn=fn, device=device)


@pytest.mark.parametrize("impl", IMPLS)
def bench_anchors_decode(benchmark, device, impl):
    """Anchors, then RPN deltas [217k, 4] decoded and clipped to the image (batch of 1)."""
    img, fms = _inputs(device)
    total = 3 * sum(h * w for h, w in GRIDS)
    gen = torch.Generator(device="cpu").manual_seed(0)
    deltas = (torch.randn(total, 4, generator=gen) * 0.5).to(device)
    if impl == "fused":
        anchor_gen, coder = AnchorGenerator(SIZES, RATIOS), BoxCoder(RPN_WEIGHTS)

        def fn():
            anchors = anchor_gen(img, fms)
            return coder.decode(deltas, anchors, image_size=IMAGE)
    elif impl == "torchvision":
        anchor_gen, coder = TVAnchorGenerator(SIZES, RATIOS), TVBoxCoder(RPN_WEIGHTS)

        def fn():
            anchors = anchor_gen(img, fms)
            return clip_boxes_to_image(coder.decode(deltas, anchors), IMAGE)
    else:
        cells = [ref.cell_anchors(s, r, device=device) for s, r in zip(SIZES, RATIOS)]
        grids = [fm.shape[-2:] for fm in fms]

        def fn():
            anchors = ref.image_anchors(cells, IMAGE, grids)[0]
            return ref.decode_boxes(deltas, anchors, RPN_WEIGHTS, CLIP, IMAGE).view(-1, 1, 4)
    run(benchmark, group="anchors_decode[5 levels]", impl=impl, fn=fn, device=device)
