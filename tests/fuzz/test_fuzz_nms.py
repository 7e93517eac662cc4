"""Fuzz: nms and batched_nms against torchvision (CPU, the oracle; half and bfloat16 upcast to
float, as both compute them) and the reference. Index lists must be identical (torchvision's CPU
nms orders ties by index, as ours does); torchvision's per-category batched path sorts the kept
boxes unstably, so with tied or NaN scores only the kept set is compared with it."""
import math

import pytest
import torch
import torchvision
from hypothesis import given, strategies as st
from torchvision.ops.boxes import _batched_nms_vanilla

from maskrcnn_fast.ops import batched_nms, nms
from maskrcnn_fast.ops import reference as ref
from support.fuzz import boxes, devices, dtypes, non_contiguous, tensor

THRESHOLDS = st.one_of(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0, 1 / 3, 1e9, 0.5 + 1e-9]),
                       st.floats(0, 1))
INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]


def _inputs(draw, n_max=14):
    device, dtype = draw(devices), draw(dtypes)
    n = draw(st.integers(0, n_max))
    nonfinite = draw(st.booleans())
    # Small coordinate ranges make overlaps (and suppression) frequent.
    hi = draw(st.sampled_from([4.0, 16.0, 64.0]))
    b = draw(boxes(n, lo=-2.0, hi=hi, nonfinite=nonfinite, size_hi=hi)).to(dtype)
    kind = draw(st.sampled_from(["distinct", "distinct", "ties", "random"]))
    if kind == "distinct":
        s = torch.randperm(n, generator=torch.Generator().manual_seed(draw(st.integers(0, 999))))
        s = s.double() / max(n, 1)
    elif kind == "ties":
        s = tensor(draw, (n,), 0, 3).round()
    else:
        s = tensor(draw, (n,), -2, 2, nonfinite)
    s = s.to(dtype)
    return device, dtype, n, b, s


def _upcast(t):
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_nms(data):
    draw = data.draw
    device, dtype, n, b, s = _inputs(draw)
    thr = draw(THRESHOLDS)
    got = nms(non_contiguous(b, draw).to(device), s.to(device), thr)
    assert got.dtype == torch.int64 and got.dim() == 1 and got.device.type == device
    got = got.cpu()
    assert torch.equal(got, ref.nms(b, s, thr).cpu())
    assert torch.equal(got, torchvision.ops.nms(_upcast(b), _upcast(s), thr))
    if n:
        assert got.unique().numel() == got.numel() and int(got.min()) >= 0 and int(got.max()) < n


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_batched_nms(data):
    draw = data.draw
    device, dtype, n, b, s = _inputs(draw)
    thr = draw(THRESHOLDS)
    idtype = draw(st.sampled_from(INT_DTYPES))
    lo = 0 if idtype == torch.uint8 else draw(st.sampled_from([0, -3]))
    idxs = torch.tensor(draw(st.lists(st.integers(lo, 3), min_size=n, max_size=n)), dtype=idtype)
    got = batched_nms(b.to(device), s.to(device), non_contiguous(idxs, draw).to(device), thr)
    assert got.dtype == torch.int64 and got.dim() == 1
    got = got.cpu()
    assert torch.equal(got, ref.batched_nms(b, s, idxs, thr).cpu())
    tv = _batched_nms_vanilla(_upcast(b), _upcast(s), idxs.long(), thr)
    distinct = s.unique().numel() == n and not bool(s.isnan().any())
    if distinct:
        assert torch.equal(got, tv)
    else:
        assert torch.equal(got.sort().values, tv.sort().values)
    # Integer coordinates (in float32 range): the public offset path is exact too.
    if dtype == torch.float64 and distinct and bool(torch.isfinite(b).all()) and bool(
            (b == b.round()).all()) and bool((b.abs() < 2 ** 20).all()):
        assert torch.equal(got, torchvision.ops.batched_nms(b, s, idxs.long(), thr))


@given(data=st.data())
def test_fuzz_nms_errors(data):
    draw = data.draw
    n = draw(st.integers(0, 4))
    bad = draw(st.sampled_from(["boxes_ndim", "boxes_last", "scores_ndim", "dtype", "int", "count",
                                "threshold", "idxs_float", "idxs_count"]))
    b, s, idxs, thr = torch.zeros(n, 4), torch.zeros(n), torch.zeros(n, dtype=torch.long), 0.5
    arg = "boxes"
    if bad == "boxes_ndim":
        b = torch.zeros(n, 4, 1)
    elif bad == "boxes_last":
        b = torch.zeros(n, draw(st.sampled_from([0, 3, 5])))
    elif bad == "scores_ndim":
        s, arg = torch.zeros(n, 1), "scores"
    elif bad == "dtype":
        s, arg = torch.zeros(n, dtype=torch.float64), "scores"
    elif bad == "int":
        b, s = torch.zeros(n, 4, dtype=torch.int32), torch.zeros(n, dtype=torch.int32)
    elif bad == "count":
        s, arg = torch.zeros(n + 1), "scores"
    elif bad == "threshold":
        thr, arg = draw(st.sampled_from([-1e-9, -0.5, -math.inf])), "iou_threshold"
    elif bad == "idxs_float":
        idxs, arg = torch.zeros(n), "idxs"
    else:
        idxs, arg = torch.zeros(n + 1, dtype=torch.long), "idxs"
    if not bad.startswith("idxs"):
        with pytest.raises((RuntimeError, ValueError), match=arg):
            nms(b, s, thr)
    with pytest.raises((RuntimeError, ValueError), match=arg):
        batched_nms(b, s, idxs, thr)
