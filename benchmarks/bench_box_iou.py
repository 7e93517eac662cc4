"""box_iou at training-target sizes: the ground truths of 2 images (20 objects each) against the
R50-FPN anchors of an 800x1088 batch (217k), image by image, as the RPN's matching does; and
against 2000 proposals (the box head's)."""
import pytest
import torch
import torchvision
from _matching_inputs import anchors, gt_boxes, proposals
from common import IMPLS, run

from maskrcnn_fast.ops import box_iou
from maskrcnn_fast.ops import reference

BOX_IOU = {"fused": box_iou, "torch": reference.box_iou, "torchvision": torchvision.ops.box_iou}


@pytest.mark.parametrize("impl", IMPLS)
def bench_box_iou_anchors(benchmark, impl, device):
    g = torch.Generator().manual_seed(0)
    gts = [gt_boxes(20, g).to(device) for _ in range(2)]
    anc = anchors().to(device)
    fn = BOX_IOU[impl]
    run(benchmark, group="box_iou[2x20x217k]", impl=impl, fn=lambda: [fn(gt, anc) for gt in gts],
        device=device)


@pytest.mark.parametrize("impl", IMPLS)
def bench_box_iou_proposals(benchmark, impl, device):
    g = torch.Generator().manual_seed(0)
    gts = [gt_boxes(20, g) for _ in range(2)]
    props = [torch.cat([proposals(gt, 2000, g), gt]).to(device) for gt in gts]
    gts = [gt.to(device) for gt in gts]
    fn = BOX_IOU[impl]
    run(benchmark, group="box_iou[2x20x2k]", impl=impl,
        fn=lambda: [fn(gt, p) for gt, p in zip(gts, props)], device=device)
