"""Fuzz: box_iou against torchvision and the pure-PyTorch reference (tolerances of
tests/test_box_iou.py): bitwise torchvision.ops.box_iou (NaN where it gives NaN) and the reference
in the same dtype, for every dtype and adversarial coordinates (NaN/Inf, huge, tiny, inverted);
close to the float64 reference on well-formed boxes of moderate size.
"""
import pytest
import torch
import torchvision
from hypothesis import given, strategies as st

import maskrcnn_fast.ops as ops
from maskrcnn_fast.ops import reference as ref
from support.fuzz import FLOATS, boxes, devices, dtypes, non_contiguous


_ACC = {torch.float64: torch.float64}


def _acc(dtype):
    return _ACC.get(dtype, torch.float32)


def _same(got, want):
    """Bitwise equal, NaN where the other has NaN."""
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    torch.testing.assert_close(got.cpu(), want.cpu(), rtol=0, atol=0, equal_nan=True)


def _moderate(b):
    """Bool[K]: well-formed boxes (x1 <= x2, y1 <= y2) with finite coordinates of moderate
    magnitude (no overflow or underflow of sizes and areas in any dtype)."""
    a = b.abs()
    ok = torch.isfinite(b).all(1) & ((a <= 1e4) & ((a == 0) | (a >= 1e-3))).all(1)
    return ok & (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_box_iou(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    nonfinite = draw(st.booleans())
    grid = draw(st.booleans())
    lo, hi = (-8.0, 72.0) if not grid else (0.0, 6.0)
    a = draw(boxes(draw(st.integers(0, 6)), lo=lo, hi=hi, nonfinite=nonfinite, extreme=not grid))
    b = draw(boxes(draw(st.integers(0, 6)), lo=lo, hi=hi, nonfinite=nonfinite, extreme=not grid))
    if grid and len(a) and len(b) and draw(st.booleans()):
        b[: len(a)] = a[: len(b)]  # identical boxes: IoU exactly 1 (or 0 / 0)
    a, b = a.to(dtype), b.to(dtype)
    got = ops.box_iou(non_contiguous(a, draw).to(device), non_contiguous(b, draw).to(device))
    assert got.device.type == device
    got = got.cpu()
    _same(got, torchvision.ops.box_iou(a, b))
    _same(got, ref.box_iou(a, b))
    # well-formed, moderate boxes: close to the float64 IoU of the same (rounded) coordinates
    rows, cols = _moderate(a.double()), _moderate(b.double())
    want = ref.box_iou(a.double(), b.double())
    sel = rows[:, None] & cols[None, :] & torch.isfinite(want)
    sub = torch.finfo(dtype).eps  # w, h are subtracted in the boxes' dtype
    acc = torch.finfo(_acc(dtype)).eps
    tol = (4 * sub + 16 * acc) * want.abs() + 4 * acc
    bad = sel & ~((got.double() - want).abs() <= tol)
    assert not bool(bad.any()), (got[bad][:4].tolist(), want[bad][:4].tolist())


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_box_iou_integer_and_mixed(data):
    """Integer boxes: exact in float64, returned in the default dtype (torchvision's true
    division; equal to it while areas stay below 2**24). Mixed dtypes: promoted first."""
    draw = data.draw
    device = draw(devices)
    a = draw(boxes(draw(st.integers(0, 5)), lo=-20.0, hi=60.0, extreme=False)).round()
    b = draw(boxes(draw(st.integers(0, 5)), lo=-20.0, hi=60.0, extreme=False)).round()
    ta, tb = draw(st.sampled_from([torch.int64, torch.int32, torch.int16, torch.float32])), \
        draw(st.sampled_from([torch.int64, torch.int32, torch.int16, *FLOATS]))
    a, b = a.to(ta), b.to(tb)
    got = ops.box_iou(a.to(device), b.to(device)).cpu()
    if a.is_floating_point() or b.is_floating_point():
        dtype = torch.promote_types(ta, tb)
        _same(got, ops.box_iou(a.to(dtype), b.to(dtype)))
        _same(got, ref.box_iou(a, b))
    else:
        assert got.dtype == torch.get_default_dtype()
        _same(got, torchvision.ops.box_iou(a, b))
        _same(got, ref.box_iou(a, b))
