"""Fuzz: match_boxes against torchvision and the pure-PyTorch reference (tolerances of
tests/test_match_boxes.py): identical to torchvision's ``Matcher(high, low, allow)(box_iou(gt_i,
boxes_i))`` image by image (an image without ground truth, or a padding row: -1) and to the
reference; coarse grids and copied rows make IoU ties (between ground truths, between boxes, with
the thresholds) common; NaN/Inf coordinates follow torchvision (documented).
"""
import math

import pytest
import torch
import torchvision
from hypothesis import given, strategies as st

import maskrcnn_fast.ops as ops
from maskrcnn_fast.ops import reference as ref
from support.fuzz import boxes, devices, dtypes, non_contiguous
from support.ops import torchvision_match


THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 1.0, 0.4, float(torch.tensor(0.7, dtype=torch.float32)), 1e-8,
              -math.inf, math.inf, -0.5, 2.0]


@st.composite
def _match_problem(draw):
    dtype = draw(dtypes)
    n, g, t = draw(st.integers(0, 3)), draw(st.integers(0, 5)), draw(st.integers(0, 8))
    nonfinite = draw(st.integers(0, 3)) == 0
    grid = draw(st.booleans())
    kw = dict(lo=0.0, hi=6.0, extreme=False) if grid else dict(lo=-8.0, hi=72.0, extreme=draw(st.booleans()))
    gt = draw(boxes(n * g, nonfinite=nonfinite, **kw)).reshape(n, g, 4)
    shared = draw(st.booleans())
    if draw(st.integers(0, 7)) == 0:
        # across the CPU kernel's tiles of 256 boxes: seeded grid boxes, a few adversarial rows
        t = draw(st.sampled_from([255, 256, 257, 300, 513]))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
        xy = torch.randint(0, 7, (t if shared else n * t, 2), generator=gen).double()
        bx = torch.cat([xy, xy + torch.randint(0, 4, xy.shape, generator=gen).double()], 1)
        rows = draw(boxes(draw(st.integers(0, 4)), nonfinite=nonfinite, **kw))
        if len(bx):
            at = torch.randint(0, len(bx), (len(rows),), generator=gen)
            bx[at] = rows
    else:
        bx = draw(boxes(t if shared else n * t, nonfinite=nonfinite, **kw))
    bx = bx.reshape(t, 4) if shared else bx.reshape(n, t, 4)
    if g and t and draw(st.booleans()):  # copies of ground truths (IoU 1) and of boxes (ties)
        for _ in range(draw(st.integers(1, 4))):
            i, j, k = draw(st.integers(0, max(n - 1, 0))), draw(st.integers(0, g - 1)), draw(st.integers(0, t - 1))
            if n:
                if shared:
                    bx[k] = gt[i, j]
                else:
                    bx[i, k] = gt[i, j]
            if draw(st.booleans()) and t > 1:
                src = draw(st.integers(0, t - 1))
                bx[..., k, :] = bx[..., src, :]
    gt_counts = torch.tensor(draw(st.lists(st.integers(0, g), min_size=n, max_size=n)), dtype=torch.int64)
    box_counts = None
    if draw(st.booleans()):
        box_counts = torch.tensor(draw(st.lists(st.integers(0, t), min_size=n, max_size=n)), dtype=torch.int64)
    th = sorted([draw(st.one_of(st.sampled_from(THRESHOLDS), st.floats(0, 1))) for _ in range(2)])
    low, high = th
    gt, bx = gt.to(dtype), bx.to(dtype)
    if n and g and t and draw(st.booleans()):
        # a threshold equal to (or next to) an IoU that occurs: the comparison's dtype matters
        iou = torchvision.ops.box_iou(gt[0], bx if shared else bx[0]).flatten()
        v = float(iou[draw(st.integers(0, len(iou) - 1))])
        if math.isfinite(v):
            v = draw(st.sampled_from([v, math.nextafter(v, math.inf), math.nextafter(v, -math.inf),
                                      float(torch.tensor(v).float().double() + 1e-9)]))
            th = sorted([v, draw(st.sampled_from([v, *THRESHOLDS]))])
            low, high = th
    if draw(st.integers(0, 4)) == 0:
        low = high
    allow = draw(st.booleans())
    return gt, gt_counts, bx, box_counts, high, low, allow


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(problem=_match_problem(), device=devices, data=st.data())
def test_fuzz_match_boxes(problem, device, data):
    gt, gt_counts, bx, box_counts, high, low, allow = problem
    want = torchvision_match(gt, gt_counts, bx, box_counts, high, low, allow)
    args = (non_contiguous(gt, data.draw).to(device), gt_counts.to(device),
            non_contiguous(bx, data.draw).to(device), None if box_counts is None else box_counts.to(device))
    got = ops.match_boxes(*args, high, low, allow)
    assert got.dtype == torch.int64 and got.device.type == device
    assert got.shape == (gt.shape[0], bx.shape[-2])
    assert torch.equal(got.cpu(), want)
    assert torch.equal(ref.match_boxes(gt, gt_counts, bx, box_counts, high, low, allow), want)
    if gt.dtype == torch.float64:  # the float64 reference, exactly
        assert torch.equal(ref.match_boxes(gt.double(), gt_counts, bx.double(), box_counts, high, low, allow), want)
    if bx.dim() == 2 and gt.shape[0]:  # shared boxes: the same as every image's own copy
        expanded = bx.expand(gt.shape[0], -1, -1).to(device)
        assert torch.equal(ops.match_boxes(args[0], args[1], expanded, args[3], high, low, allow), got)


@given(data=st.data())
def test_fuzz_match_boxes_errors(data):
    draw = data.draw
    n, g, t = draw(st.integers(1, 3)), draw(st.integers(0, 4)), draw(st.integers(0, 5))
    kw = dict(gt_boxes=torch.zeros(n, g, 4), gt_counts=torch.full((n,), g, dtype=torch.int64),
              boxes=torch.zeros(n, t, 4), box_counts=torch.full((n,), t, dtype=torch.int64),
              high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=draw(st.booleans()))
    bad = draw(st.sampled_from(["gt_ndim", "gt_last", "gt_int", "b_ndim", "b_last", "b_n", "dtype",
                                "gc_value", "gc_dtype", "gc_len", "bc_value", "bc_dtype", "bc_len",
                                "thresholds", "nan"]))
    arg = {"gt": "gt_boxes", "b_": "boxes", "dt": "gt_boxes and boxes", "gc": "gt_counts",
           "bc": "box_counts", "th": "low_threshold", "na": "low_threshold"}[bad[:2]]
    i = draw(st.integers(0, n - 1))
    if bad == "gt_ndim":
        kw["gt_boxes"] = torch.zeros(n * g, 4)
    elif bad == "gt_last":
        kw["gt_boxes"] = torch.zeros(n, g, draw(st.sampled_from([0, 3, 5])))
    elif bad == "gt_int":
        kw["gt_boxes"] = torch.zeros(n, g, 4, dtype=draw(st.sampled_from([torch.int64, torch.uint8])))
    elif bad == "b_ndim":
        kw["boxes"] = torch.zeros(draw(st.sampled_from([(4,), (1, n, t, 4)])))
    elif bad == "b_last":
        kw["boxes"] = torch.zeros(n, t, draw(st.sampled_from([0, 2, 5])))
    elif bad == "b_n":
        kw["boxes"] = torch.zeros(n + draw(st.integers(1, 2)), t, 4)
    elif bad == "dtype":
        kw["boxes"] = torch.zeros(n, t, 4, dtype=draw(st.sampled_from([torch.float64, torch.float16])))
    elif bad == "gc_value":
        kw["gt_counts"][i] = draw(st.sampled_from([-1, g + 1, -(2 ** 40), 2 ** 40]))
        arg = "gt_counts.*outside"
    elif bad == "gc_dtype":
        kw["gt_counts"] = kw["gt_counts"].to(draw(st.sampled_from([torch.int32, torch.float32])))
    elif bad == "gc_len":
        kw["gt_counts"] = torch.full((n + draw(st.sampled_from([-1, 1])),), 0, dtype=torch.int64)
    elif bad == "bc_value":
        kw["box_counts"][i] = draw(st.sampled_from([-1, t + 1, 2 ** 40]))
        arg = "box_counts.*outside"
    elif bad == "bc_dtype":
        kw["box_counts"] = kw["box_counts"].to(draw(st.sampled_from([torch.int32, torch.float64])))
    elif bad == "bc_len":
        kw["box_counts"] = kw["box_counts"][None]
    elif bad == "thresholds":
        kw["high_threshold"], kw["low_threshold"] = 0.3, draw(st.sampled_from([0.31, 1.0, math.inf]))
    else:
        kw[draw(st.sampled_from(["high_threshold", "low_threshold"]))] = math.nan
    with pytest.raises(RuntimeError, match=arg):
        torch.ops.maskrcnn_fast.match_boxes(*kw.values())
