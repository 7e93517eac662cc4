"""match_boxes at the two training-target sizes of R50-FPN (batch of 2 images, 800x1088):

- rpn: 15 and 20 objects against the 217k anchors shared by both images, thresholds 0.7 / 0.3
  with low-quality matches;
- roi: the same objects against 2000 proposals + the objects themselves per image, 0.5 / 0.5.

fused = one match_boxes call for both images; torch = the reference (one call, with the
[N, G, T] IoU matrix); torchvision = box_iou + Matcher image by image.
"""
import pytest
import torch
import torchvision
from _matching_inputs import anchors, gt_boxes, padded, proposals
from common import IMPLS, run
from torchvision.models.detection._utils import Matcher

from maskrcnn_fast.ops import match_boxes
from maskrcnn_fast.ops import reference

OBJECTS = (15, 20)


def _objects(g):
    return [gt_boxes(k, g) for k in OBJECTS]


def _fn(impl, gt_list, boxes_list, gt, counts, boxes, box_counts, params):
    if impl == "fused":
        return lambda: match_boxes(gt, counts, boxes, box_counts, *params)
    if impl == "torch":
        return lambda: reference.match_boxes(gt, counts, boxes, box_counts, *params)
    matcher = Matcher(*params)
    return lambda: [matcher(torchvision.ops.box_iou(t, b)) for t, b in zip(gt_list, boxes_list)]


@pytest.mark.parametrize("impl", IMPLS)
def bench_match_boxes_rpn(benchmark, impl, device):
    g = torch.Generator().manual_seed(0)
    gts = _objects(g)
    anc = anchors().to(device)
    gt, counts = padded(gts)
    fn = _fn(impl, [x.to(device) for x in gts], [anc, anc], gt.to(device), counts.to(device), anc,
             None, (0.7, 0.3, True))
    run(benchmark, group="match_boxes[rpn 2x217k]", impl=impl, fn=fn, device=device)


@pytest.mark.parametrize("impl", IMPLS)
def bench_match_boxes_roi(benchmark, impl, device):
    g = torch.Generator().manual_seed(0)
    gts = _objects(g)
    props = [torch.cat([proposals(x, 2000, g), x]) for x in gts]
    gt, counts = padded(gts)
    boxes, box_counts = padded(props)
    fn = _fn(impl, [x.to(device) for x in gts], [p.to(device) for p in props], gt.to(device),
             counts.to(device), boxes.to(device), box_counts.to(device), (0.5, 0.5, False))
    run(benchmark, group="match_boxes[roi 2x2k]", impl=impl, fn=fn, device=device)
