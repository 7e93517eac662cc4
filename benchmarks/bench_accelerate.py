"""torchvision's own ops with and without maskrcnn_fast.accelerate_torchvision(), in one run.

Group ``torchvision_ops.<op>[size]``: ``torchvision`` is ``torchvision.ops.nms`` / ``roi_align``
on torchvision's kernels, ``fused`` the same call with our kernels behind torchvision's ops
(dispatcher, adapter, our kernel), so report.py's ``tv/fused`` is the speed-up a torchvision
user gets from the one call; compare it with the op's own group (``nms[4k]``, ``roi_align[1000]``:
our op called directly) for the adapter's cost. Inputs and sizes are bench_nms.py's and
bench_roi_align.py's.
"""
import contextlib

import bench_nms
import bench_roi_align
import pytest
import torch
import torchvision
from common import run

from maskrcnn_fast import accelerate

IMPLS = ["fused", "torchvision"]


def _kernels(impl):
    """fused: our kernels behind torchvision's ops for the benchmark; torchvision: its own."""
    if impl == "fused":
        return accelerate.torchvision_accelerated()
    assert not accelerate.is_accelerated()
    return contextlib.nullcontext()


@pytest.mark.parametrize("n", [1000, 4000, 12000], ids=["1k", "4k", "12k"])
@pytest.mark.parametrize("impl", IMPLS)
def bench_torchvision_nms(benchmark, impl, n, device):
    boxes, scores, _ = bench_nms._inputs(n, 1, device)
    with _kernels(impl):
        run(benchmark, group=f"torchvision_ops.nms[{n // 1000}k]", impl=impl,
            fn=lambda: torchvision.ops.nms(boxes, scores, 0.7), device=device)


@pytest.mark.parametrize("num_rois", [1000, 2000])
@pytest.mark.parametrize("impl", IMPLS)
def bench_torchvision_roi_align(benchmark, impl, num_rois, device):
    x, rois = bench_roi_align._inputs(num_rois, device)
    args = bench_roi_align.ARGS
    with _kernels(impl), torch.no_grad():
        run(benchmark, group=f"torchvision_ops.roi_align[{num_rois}]", impl=impl,
            fn=lambda: torchvision.ops.roi_align(x, rois, **args), device=device)


@pytest.mark.parametrize("impl", IMPLS)
def bench_torchvision_roi_align_backward(benchmark, impl, device):
    x, rois = bench_roi_align._inputs(1000, device)
    x.requires_grad_(True)
    args = bench_roi_align.ARGS
    grad = torch.randn(rois.size(0), x.size(1), *args["output_size"], device=device)

    def step():
        out = torchvision.ops.roi_align(x, rois, **args)
        return torch.autograd.grad(out, x, grad)[0]

    with _kernels(impl):
        run(benchmark, group="torchvision_ops.roi_align_backward[1000]", impl=impl, fn=step, device=device)
