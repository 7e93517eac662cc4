"""End-to-end Mask R-CNN R50-FPN inference: images of 800x1088 (min_size 800, max_size 1333, so
no resize), batch 1 and 2, eval mode, no_grad.

Every impl runs the same random weights (torchvision's initialisation, seed 0): ``fused`` and
``torch`` are maskrcnn_fast's model on our kernels / our pure-PyTorch ops, ``torchvision`` is
torchvision's maskrcnn_resnet50_fpn with the same state_dict. With these weights about three
class scores per proposal pass box_score_thresh=0.05, so every image gets its 100 detections and
100 masks, as with trained weights. ``extra_info`` records images/s and the detections per image.
"""
import pytest
import torch
import torchvision

from common import IMPLS, run
from maskrcnn_fast.models import maskrcnn_resnet50_fpn

H, W = 800, 1088
BUDGET_S = 1.0  # one forward takes seconds on a CPU: run()'s minimum of 3 rounds applies


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()


def _model(impl, state, device):
    if impl == "torchvision":
        model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    else:
        model = maskrcnn_resnet50_fpn(ops=impl)
    model.load_state_dict(state)
    return model.eval().to(device)


# impl varies fastest: the three impls of a group run back to back, under the same machine load
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bs", [1, 2])
def bench_model(benchmark, device, state, impl, bs):
    model = _model(impl, state, device)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, H, W, generator=g).to(device) for _ in range(bs)]

    def fn():
        with torch.no_grad():
            return model(images)

    out = run(benchmark, group=f"model[bs{bs}]", impl=impl, fn=fn, device=device, budget_s=BUDGET_S)
    benchmark.extra_info["detections_per_image"] = [int(o["boxes"].shape[0]) for o in out]
    benchmark.extra_info["images_per_s"] = bs / benchmark.stats.stats.median
