"""Fuzz: multilevel_roi_align (+ backward) against torchvision's MultiScaleRoIAlign and the float64
reference (tolerances of tests/test_multilevel_roi_align.py: float32/float64 bitwise torchvision's
on the CPU, 1e-5 on CUDA; float64 reference 1e-12; half 4e-3, bfloat16 1.6e-2 relative to our
float32 result). ROIs with a NaN or infinite coordinate are documented to give zeros (and no
gradient); they are checked for that and left out of the torchvision comparison.
"""
import math

import pytest
import torch
import torchvision
from hypothesis import given, strategies as st

from maskrcnn_fast.ops import MultiScaleRoIAlign, multilevel_roi_align
from maskrcnn_fast.ops import reference as ref
from support.fuzz import HALF_TOL, boxes, devices, dtypes, grid_is_bounded, scaled_finite, tv_close


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_multilevel_roi_align(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    levels = draw(st.integers(1, 4))
    n, c = draw(st.integers(1, 2)), draw(st.integers(0, 2))
    first = draw(st.sampled_from([1, 2, 3]))  # k_min: scale 2**-first
    image = draw(st.integers(1, 40))
    scales = [2.0 ** -(first + i) for i in range(levels)]
    g = torch.Generator().manual_seed(draw(st.integers(0, 9999)))
    feats64 = [torch.rand(n, c, max(math.ceil(image * s), 1) + draw(st.integers(-1, 1)) * (image * s > 2),
                          max(math.ceil(image * s), 1), generator=g, dtype=torch.float64)
               for s in scales]
    k = draw(st.integers(0, 5))
    nonfinite = draw(st.booleans())
    b = draw(boxes(k, lo=-10, hi=image + 10, nonfinite=nonfinite, size_hi=image + 20))
    # Sometimes the big boxes that go to the coarse levels.
    if k and draw(st.booleans()):
        b = b * draw(st.sampled_from([8.0, 30.0, 0.1]))
    idx = torch.tensor(draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k)),
                       dtype=torch.float64).reshape(k, 1)
    rois64 = torch.cat([idx, b], 1)
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    aligned = draw(st.booleans())
    sampling = draw(st.sampled_from([-1, 0, 1, 2]))
    if not grid_is_bounded(rois64, scales[0], ph, pw, aligned):
        sampling = draw(st.integers(1, 2))
    mixed = dtype in (torch.float16, torch.bfloat16) and draw(st.booleans())
    feats = [f.to(dtype) for f in feats64]
    if draw(st.booleans()):
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    rois = rois64.to(torch.float32 if mixed else dtype)
    grad_ok = dtype in (torch.float32, torch.float64)
    feats_dev = [f.to(device).requires_grad_(grad_ok) for f in feats]
    args = ((ph, pw), scales, sampling, aligned)
    out = multilevel_roi_align(feats_dev, rois.to(device), *args)
    assert out.shape == (k, c, ph, pw) and out.dtype == dtype
    bad = ~torch.isfinite(rois[:, 1:]).all(1)
    assert bool((out.detach().cpu()[bad] == 0).all()), "non-finite ROIs give zeros"
    if grad_ok:
        # In the features' dtype: levels and adaptive grids are computed in it (see roi_align).
        want = ref.multilevel_roi_align([f.clone() for f in feats], rois.clone(), *args).double()
        torch.testing.assert_close(out.detach().cpu().double(), want,
                                   **(dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64
                                      else dict(rtol=1e-5, atol=1e-5)))
        # torchvision's pooler (aligned=False, scales inferred from the maps) on the finite ROIs
        good = ~bad & scaled_finite(rois, scales[0])
        if not aligned and k and bool(good.any()) and all(
                s == 2.0 ** round(math.log2(f.shape[2] / image)) for f, s in zip(feats, scales)):
            tvp = torchvision.ops.MultiScaleRoIAlign([str(i) for i in range(levels)], (ph, pw), sampling)
            names = {str(i): f for i, f in enumerate(feats)}
            per_image = [rois[good & (rois[:, 0] == i), 1:] for i in range(n)]
            order = torch.cat([torch.nonzero(good & (rois[:, 0] == i)).flatten() for i in range(n)])
            tv = tvp(names, per_image, [(image, image)] * n)
            ours_mod = MultiScaleRoIAlign([str(i) for i in range(levels)], (ph, pw), sampling)
            mod = ours_mod({kk: v.to(device) for kk, v in names.items()},
                           [p.to(device) for p in per_image], [(image, image)] * n)
            tv_close(mod, tv, device)
            tv_close(out.detach()[order.to(device)], tv, device)
        if out.numel():
            grad = torch.rand(out.shape, generator=g, dtype=torch.float64).to(dtype)
            ours = torch.autograd.grad(out, feats_dev, grad.to(device), allow_unused=True)
            # In the features' dtype, as the forward (a float32 ROI side can round to 0).
            fr = [f.detach().clone().requires_grad_(True) for f in feats]
            want_g = torch.autograd.grad(ref.multilevel_roi_align(fr, rois.clone(), *args), fr,
                                         grad, allow_unused=True)
            for a, e, f in zip(ours, want_g, fr):
                e = (torch.zeros_like(f) if e is None else e).double()
                if a is None:
                    assert bool((e == 0).all())
                    continue
                torch.testing.assert_close(a.cpu().double(), e,
                                           **(dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64
                                              else dict(rtol=1e-5, atol=1e-5)))
    else:
        f32 = multilevel_roi_align([f.float().to(device) for f in feats], rois.float().to(device), *args)
        torch.testing.assert_close(out.float(), f32, **HALF_TOL[dtype])
