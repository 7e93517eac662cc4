"""Fuzz: paste_masks and paste_masks_batched (probabilities and the uint8 threshold option)
against torchvision's paste_masks_in_image and the float64 reference (tolerances of
tests/test_paste_masks.py: 2e-5 in float32, 1e-12 in float64, half 5e-4 / 2e-3 and bfloat16
4e-3 / 1.6e-2 against the reference / torchvision).

Documented: boxes whose expanded coordinates are NaN, infinite or beyond +-2**60 give all-zero
masks, and so do boxes wholly left of or above the image (torchvision raises on those: they are
left out of its comparison, as are boxes too large for torchvision to resize into memory).
"""
import math

import pytest
import torch

from maskrcnn_fast import emulated
from hypothesis import given, strategies as st
from torchvision.models.detection.roi_heads import paste_masks_in_image

from maskrcnn_fast.ops import paste_masks, paste_masks_batched
from maskrcnn_fast.ops import reference as ref
from maskrcnn_fast.ops.reference.paste_masks import _expanded_int_boxes
from support.fuzz import boxes, devices, dtypes, non_contiguous

OP = torch.ops.maskrcnn_fast.paste_masks.default
TOL = {torch.float32: (2e-5, 2e-5), torch.float64: (1e-12, 1e-12),
       torch.float16: (5e-4, 2e-3), torch.bfloat16: (4e-3, 1.6e-2)}


def _tv_can_paste(b, m, padding, h, w):
    e, valid = _expanded_int_boxes(b, (m + 2 * padding) / m)
    small = ((e[:, 2] - e[:, 0]).abs() < 4096) & ((e[:, 3] - e[:, 1]).abs() < 4096)
    return valid & small & (e[:, 2] + 1 >= 0) & (e[:, 3] + 1 >= 0) & (e[:, 0] <= w) & (e[:, 1] <= h)


def _masks(draw, n, m1, m2, dtype):
    g = torch.Generator().manual_seed(draw(st.integers(0, 9999)))
    t = torch.rand(n, m1, m2, generator=g, dtype=torch.float64)
    if draw(st.booleans()):
        t = (t * 4).round() / 4  # exact thresholds hit
    return t.to(dtype)


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_paste_masks(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    box_dtype = draw(st.sampled_from([dtype, torch.float32, torch.float64]))
    n = draw(st.integers(0, 5))
    m = draw(st.integers(1, 8))
    m2 = m if draw(st.booleans()) else draw(st.integers(1, 8))
    h, w = draw(st.integers(0, 24)), draw(st.integers(0, 24))
    padding = draw(st.integers(0, 3))
    masks = _masks(draw, n, m2, m, dtype)
    b = draw(boxes(n, lo=-6, hi=30, nonfinite=draw(st.booleans()), size_hi=30)).to(box_dtype)
    four_d = draw(st.booleans())
    mk = masks[:, None] if four_d else masks
    out = paste_masks(non_contiguous(mk, draw).to(device), non_contiguous(b, draw).to(device),
                      (h, w), padding=padding)
    assert out.shape == (n, 1, h, w) and out.dtype == dtype
    out = out.cpu()
    atol_ref, atol_tv = TOL[dtype]
    expected = ref.paste_masks(masks.double(), b, (h, w), padding=padding)
    assert expected.shape == out.shape
    torch.testing.assert_close(out.double(), expected, atol=atol_ref, rtol=0)
    ok = _tv_can_paste(b, m, padding, h, w)
    if bool(ok.any()) and h and w:
        tv = paste_masks_in_image(masks[ok][:, None], b[ok], (h, w), padding=padding)
        torch.testing.assert_close(out[ok].double(), tv.double(), atol=atol_tv, rtol=0)
    # Non-finite boxes: all-zero masks.
    assert bool((out[~torch.isfinite(b).all(1)] == 0).all())
    # The uint8 threshold: exactly the probabilities' comparison.
    thr = draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 1e-9]))
    binary = paste_masks(mk.to(device), b.to(device), (h, w), padding=padding, threshold=thr).cpu()
    assert binary.dtype == torch.uint8 and binary.shape == out.shape
    assert torch.equal(binary, (out > thr).to(torch.uint8))
    assert torch.equal(binary, ref.paste_masks(masks, b, (h, w), padding=padding, threshold=thr))


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_paste_masks_batched(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    n, nimg = draw(st.integers(0, 5)), draw(st.integers(1, 3))
    m = draw(st.integers(1, 6))
    sizes = [(draw(st.integers(0, 16)), draw(st.integers(0, 16))) for _ in range(nimg)]
    idx = torch.tensor(draw(st.lists(st.integers(0, nimg - 1), min_size=n, max_size=n)),
                       dtype=torch.int64)
    masks = _masks(draw, n, m, m, dtype)
    b = draw(boxes(n, lo=-6, hi=20, nonfinite=draw(st.booleans()), size_hi=20)).to(dtype)
    padding = draw(st.integers(0, 2))
    thr = draw(st.sampled_from([None, 0.5, 0.0]))
    out_size = draw(st.one_of(st.none(), st.tuples(st.integers(0, 18), st.integers(0, 18))))
    as_tensor = draw(st.booleans())
    sz = torch.tensor(sizes, dtype=torch.int64).to(device) if as_tensor else sizes
    out = paste_masks_batched(masks.to(device), b.to(device), idx.to(device), sz, padding, thr, out_size)
    H = max(s[0] for s in sizes) if out_size is None else out_size[0]
    W = max(s[1] for s in sizes) if out_size is None else out_size[1]
    assert out.shape == (n, 1, H, W) and out.dtype == (dtype if thr is None else torch.uint8)
    out = out.cpu()
    want = ref.paste_masks_batched(masks.double(), b, idx, sizes, padding, thr, out_size)
    if thr is None:
        torch.testing.assert_close(out.double(), want.double(), atol=TOL[dtype][0], rtol=0)
    for i in range(n):
        h, w = sizes[int(idx[i])]
        one = paste_masks(masks[i:i + 1].to(device), b[i:i + 1].to(device), (h, w), padding, thr).cpu()
        hh, ww = min(h, H), min(w, W)
        assert torch.equal(out[i, :, :hh, :ww], one[0, :, :hh, :ww])
        assert bool((out[i, :, hh:] == 0).all()) and bool((out[i, :, :, ww:] == 0).all())


@given(data=st.data())
def test_fuzz_paste_masks_errors(data):
    draw = data.draw
    n = draw(st.integers(1, 3))
    masks, b = torch.rand(n, 4, 4), torch.rand(n, 4) * 9
    idx, sizes = torch.zeros(n, dtype=torch.int64), torch.tensor([[10, 12]])
    cases = {
        "masks": (masks.int(), b, None, None, 10, 12, 1, None),
        "boxes": (masks, b[:, :3], None, None, 10, 12, 1, None),
        "image_index": (masks, b, idx + draw(st.sampled_from([1, -1, 5])), sizes, 10, 12, 1, None),
        "image_sizes": (masks, b, idx, -sizes, 10, 12, 1, None),
        "out_height": (masks, b, None, None, -draw(st.integers(1, 5)), 12, 1, None),
        "out_width": (masks, b, None, None, 10, -draw(st.integers(1, 5)), 1, None),
        "padding": (masks, b, None, None, 10, 12, -draw(st.integers(1, 5)), None),
        "threshold": (masks, b, None, None, 10, 12, 1, draw(st.sampled_from([-0.5, -1e-9, math.nan]))),
    }
    name = draw(st.sampled_from(sorted(cases)))
    if name == "image_index" and emulated.active():
        # Data-dependent validity: the CPU raises, a CUDA kernel cannot without a host sync and
        # pastes an all-zero mask instead.
        assert torch.all(OP(*cases[name]) == 0)
        return
    with pytest.raises((RuntimeError, ValueError), match=name):
        OP(*cases[name])
