"""roi_align at R50-FPN sizes: the 200x272 level (stride 4) of two 800x1088 images, 256 channels,
1000 or 2000 ROIs spread over the images, 7x7 bins, sampling_ratio 2, aligned=False."""
import pytest
import torch
import torchvision
from common import IMPLS, run

import maskrcnn_fast  # noqa: F401
from maskrcnn_fast.ops import reference
from maskrcnn_fast.ops import roi_align

IMAGE_H, IMAGE_W = 800, 1088
SCALE = 0.25
ARGS = dict(output_size=(7, 7), spatial_scale=SCALE, sampling_ratio=2, aligned=False)


def _inputs(num_rois, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, int(IMAGE_H * SCALE), int(IMAGE_W * SCALE), generator=g)
    # Proposal-like boxes: centres anywhere, sides log-uniform in 16..512 px, clipped.
    cx = torch.rand(num_rois, generator=g) * IMAGE_W
    cy = torch.rand(num_rois, generator=g) * IMAGE_H
    wh = torch.exp(torch.empty(num_rois, 2).uniform_(2.77, 6.24, generator=g))
    boxes = torch.stack(
        [
            (cx - wh[:, 0] / 2).clamp(0, IMAGE_W),
            (cy - wh[:, 1] / 2).clamp(0, IMAGE_H),
            (cx + wh[:, 0] / 2).clamp(0, IMAGE_W),
            (cy + wh[:, 1] / 2).clamp(0, IMAGE_H),
        ],
        1,
    )
    batch = (torch.arange(num_rois) * 2 // num_rois).to(boxes.dtype)[:, None]
    return x.to(device), torch.cat([batch, boxes], 1).to(device)


def _fn(impl):
    return {"fused": roi_align, "torch": reference.roi_align, "torchvision": torchvision.ops.roi_align}[impl]


@pytest.mark.parametrize("num_rois", [1000, 2000])
@pytest.mark.parametrize("impl", IMPLS)
def bench_roi_align(benchmark, impl, num_rois, device):
    x, rois = _inputs(num_rois, device)
    fn = _fn(impl)
    with torch.no_grad():
        run(benchmark, group=f"roi_align[{num_rois}]", impl=impl, fn=lambda: fn(x, rois, **ARGS), device=device)


@pytest.mark.parametrize("impl", IMPLS)
def bench_roi_align_backward(benchmark, impl, device):
    x, rois = _inputs(1000, device)
    x.requires_grad_(True)
    fn = _fn(impl)
    grad = torch.randn(rois.size(0), x.size(1), 7, 7, device=device)

    def step():
        out = fn(x, rois, **ARGS)
        return torch.autograd.grad(out, x, grad)[0]

    run(benchmark, group="roi_align_backward[1000]", impl=impl, fn=step, device=device)
