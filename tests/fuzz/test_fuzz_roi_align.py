"""Fuzz: roi_align (+ backward) against torchvision and the float64 reference (tolerances of
tests/test_roi_align.py: float32/float64 bitwise torchvision's on the CPU, 1e-5 on CUDA; float64
reference 1e-12; half 4e-3, bfloat16 1.6e-2 relative to our float32 result).

ROIs with a NaN or infinite coordinate are documented to give zeros (and no gradient); they are
checked for that and left out of the torchvision comparison. Huge ROIs with the adaptive
sampling ratio would sample up to 1024 x 1024 points per bin (torchvision: unbounded), so huge
coordinates come with a fixed sampling ratio.
"""
import math

import pytest
import torch
import torchvision
from hypothesis import given, strategies as st

from maskrcnn_fast.ops import multilevel_roi_align, roi_align
from maskrcnn_fast.ops import reference as ref
from support.fuzz import HALF_TOL, boxes, devices, dtypes, grid_is_bounded, scaled_finite, tv_close


SCALES = [1.0, 0.5, 0.25, 1 / 16, 2.0, 0.3]


def _draw_rois(draw, k, n, h, w, scale, nonfinite):
    hi = max(h, w) / scale
    b = draw(boxes(k, lo=-0.3 * hi - 2, hi=1.3 * hi + 2, nonfinite=nonfinite, size_hi=hi + 2))
    idx = torch.tensor(draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=k, max_size=k)),
                       dtype=torch.float64).reshape(k, 1)
    return torch.cat([idx, b], 1)


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_roi_align(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    n, c = draw(st.integers(1, 2)), draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    k = draw(st.integers(0, 5))
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    scale = draw(st.sampled_from(SCALES))
    aligned = draw(st.booleans())
    nonfinite = draw(st.booleans())
    rois = _draw_rois(draw, k, n, h, w, scale, nonfinite)
    sampling = draw(st.sampled_from([-1, 0, 1, 2, 3]))
    if not grid_is_bounded(rois, scale, ph, pw, aligned):
        sampling = draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 9999)))
    x64 = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    if dtype in (torch.float32, torch.float64):
        x64 = x64 * 4 - 2
    x = x64.to(dtype)
    r = rois.to(dtype)
    if draw(st.booleans()):
        x = x.contiguous(memory_format=torch.channels_last)
    args = ((ph, pw), scale, sampling, aligned)
    x_dev = x.to(device).requires_grad_(dtype in (torch.float32, torch.float64))
    out = roi_align(x_dev, r.to(device), *args)
    assert out.shape == (k, c, ph, pw) and out.dtype == dtype
    bad = ~torch.isfinite(r[:, 1:]).all(1)
    assert bool((out.detach().cpu()[bad] == 0).all()), "non-finite ROIs give zeros"
    # torchvision's CPU kernel reads out of bounds (segfault) when finite corners overflow once
    # scaled (3e38 * 2 in float32): those rows are only compared with the reference (zeros).
    good = ~bad & scaled_finite(r, scale)
    if aligned and sampling <= 0:
        # torchvision's CPU kernel raises (negative adaptive grid, "cannot create std::vector
        # larger than max_size()") for an inverted ROI with aligned=True; ours gives zeros.
        good &= (r[:, 3] >= r[:, 1]) & (r[:, 4] >= r[:, 2])
    if dtype in (torch.float32, torch.float64):
        tv = torchvision.ops.roi_align(x, r[good], *args)
        tv_close(out.detach()[good.to(device)], tv, device)
        # float32 against the reference in float32: the adaptive grid ceil(roi size / bins) is
        # discontinuous, and a float32 roi size can round across an integer (found: 2.229 - 0.229
        # > 2 in float32, 3 samples per side instead of float64's 2; torchvision agrees with us).
        want = ref.roi_align(x.clone(), r.clone(), *args).double()
        torch.testing.assert_close(out.detach().cpu().double(), want,
                                   **(dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64
                                      else dict(rtol=1e-5, atol=1e-5)))
        # backward, through autograd, against torchvision and the float64 reference
        if out.numel():
            grad = torch.rand(out.shape, generator=g, dtype=torch.float64).to(dtype)
            ours = torch.autograd.grad(out, x_dev, grad.to(device))[0]
            assert torch.isfinite(ours).all()
            xt = x.detach().clone().requires_grad_(True)
            theirs = torch.autograd.grad(torchvision.ops.roi_align(xt, r[good], *args), xt, grad[good])[0]
            tv_close(ours, theirs, device)
            if dtype == torch.float64:
                xr = x.detach().clone().requires_grad_(True)
                want_g = torch.autograd.grad(ref.roi_align(xr, r, *args), xr, grad)[0]
                torch.testing.assert_close(ours.cpu(), want_g, rtol=1e-12, atol=1e-12)
    else:
        expected = roi_align(x.float().to(device), r.float().to(device), *args)
        torch.testing.assert_close(out.detach().float(), expected, **HALF_TOL[dtype])


@given(data=st.data())
def test_fuzz_roi_align_bad_batch_index(data):
    draw = data.draw
    n = draw(st.integers(0, 2))
    b = draw(st.sampled_from([-1.0, 0.5, float(n), float(n) + 0.25, math.nan, math.inf, -0.5]))
    rois = torch.tensor([[b, 0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(RuntimeError, match=r"rois\[0, 0\]"):
        roi_align(torch.rand(n, 1, 4, 4), rois, 2, 1.0, 2)
    with pytest.raises(RuntimeError, match=r"rois\[0, 0\]"):
        multilevel_roi_align([torch.rand(n, 1, 4, 4)], rois, 2, [1.0], 2)


@given(data=st.data())
def test_fuzz_roi_align_errors(data):
    draw = data.draw
    bad = draw(st.sampled_from(["input", "rois", "pooled_height", "pooled_width", "spatial_scale",
                                "sampling_ratio", "dtype"]))
    x, rois = torch.rand(1, 1, 4, 4), torch.zeros(1, 5)
    args = dict(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2)
    arg = bad
    if bad == "input":
        x = torch.rand(1, 4, 4)
    elif bad == "rois":
        rois = torch.zeros(1, draw(st.sampled_from([4, 6])))
    elif bad == "pooled_height":
        args["output_size"] = (draw(st.integers(-3, 0)), 2)
    elif bad == "pooled_width":
        args["output_size"] = (2, draw(st.integers(-3, 0)))
    elif bad == "spatial_scale":
        args["spatial_scale"] = draw(st.sampled_from([0.0, -1.0, math.nan, math.inf]))
    elif bad == "sampling_ratio":
        args["sampling_ratio"] = draw(st.sampled_from([-2, -5, 1 << 20]))
    else:
        rois, arg = rois.double(), "rois"
    with pytest.raises((RuntimeError, ValueError), match=arg):
        torch.ops.maskrcnn_fast.roi_align(x, rois, args["spatial_scale"], args["output_size"][0],
                                          args["output_size"][1], args["sampling_ratio"], False)
