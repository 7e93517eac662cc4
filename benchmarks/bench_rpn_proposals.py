"""rpn_proposals at R50-FPN test settings: image 800x1088, 5 levels 200x272 .. 13x17, 3 anchors
per location, pre_nms_top_n 1000, post_nms_top_n 1000, NMS 0.7, min_size 1e-3, batch 1 and 2.

The torchvision side is everything its RPN does after the head: AnchorGenerator, the
concatenation of the head's outputs, BoxCoder.decode of every anchor and filter_proposals.
Logits are random normal (distinct), deltas N(0, 0.5): most top-k boxes are kept by the NMS.
"""
import pytest
import torch
from common import IMPLS, run
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers

import maskrcnn_fast  # noqa: F401
from maskrcnn_fast.ops import reference, rpn_proposals

IMAGE_H, IMAGE_W = 800, 1088
GRIDS = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
SIZES = ((32,), (64,), (128,), (256,), (512,))
RATIOS = ((0.5, 1.0, 2.0),) * 5
PRE, POST, NMS = 1000, 1000, 0.7


def _inputs(n, device):
    g = torch.Generator().manual_seed(0)
    obj = [torch.randn(n, 3, h, w, generator=g).to(device) for h, w in GRIDS]
    deltas = [(torch.randn(n, 12, h, w, generator=g) * 0.5).to(device) for h, w in GRIDS]
    sizes = [(IMAGE_H - 40 * i, IMAGE_W - 24 * i) for i in range(n)]
    gen = AnchorGenerator(SIZES, RATIOS)
    gen.set_cell_anchors(torch.float32, torch.device(device))
    return obj, deltas, gen, sizes


@pytest.mark.parametrize("n", [1, 2], ids=["bs1", "bs2"])
@pytest.mark.parametrize("impl", IMPLS)
def bench_rpn_proposals(benchmark, impl, n, device):
    obj, deltas, gen, sizes = _inputs(n, device)
    strides = [(IMAGE_H // h, IMAGE_W // w) for h, w in GRIDS]
    image_sizes = torch.tensor(sizes, device=device)
    cells = gen.cell_anchors
    if impl == "torchvision":
        rpn = RegionProposalNetwork(gen, None, 0.7, 0.3, 256, 0.5, dict(training=PRE, testing=PRE),
                                    dict(training=POST, testing=POST), NMS).eval()
        images = ImageList(torch.zeros(n, 3, IMAGE_H, IMAGE_W, device=device), sizes)
        feats = [torch.zeros(n, 1, h, w, device=device) for h, w in GRIDS]

        def fn():
            anchors = gen(images, feats)
            per_level = [o[0].numel() for o in obj]
            objectness, codes = concat_box_prediction_layers(obj, deltas)
            proposals = rpn.box_coder.decode(codes, anchors).view(n, -1, 4)
            return rpn.filter_proposals(proposals, objectness, images.image_sizes, per_level)
    else:
        op = rpn_proposals if impl == "fused" else reference.rpn_proposals

        def fn():
            return op(obj, deltas, cells, strides, image_sizes, PRE, POST, NMS, 1e-3, 0.0)

    run(benchmark, group=f"rpn_proposals[bs{n}]", impl=impl, fn=fn, device=device)
