"""Fuzz: the training ops box_iou, match_boxes and mask_targets against torchvision and the
pure-PyTorch reference (tolerances of tests/test_box_iou.py, test_match_boxes.py and
test_mask_targets.py).

box_iou: bitwise torchvision.ops.box_iou (NaN where it gives NaN) and the reference in the same
dtype, for every dtype and adversarial coordinates (NaN/Inf, huge, tiny, inverted); close to the
float64 reference on well-formed boxes of moderate size.

match_boxes: identical to torchvision's ``Matcher(high, low, allow)(box_iou(gt_i, boxes_i))``
image by image (an image without ground truth, or a padding row: -1) and to the reference;
coarse grids and copied rows make IoU ties (between ground truths, between boxes, with the
thresholds) common; NaN/Inf coordinates follow torchvision (documented).

mask_targets: bitwise our roi_align on the float copy of the masks (every box, NaN/Inf included:
zeros), bitwise torchvision's project_masks_on_boxes semantics (roi_align, spatial_scale 1,
sampling_ratio -1, aligned False) on finite boxes whose sampling grid is small (torchvision's is
unbounded), and the reference: float64 1e-12, the others in float32 1e-5 (the adaptive grid
ceil(size / M) is discontinuous, so each dtype is compared with the reference in its own
compute dtype). Out-of-range indices raise on the CPU naming the argument.
"""
import math

import pytest
import torch
import torchvision
from hypothesis import given, strategies as st
from torchvision.models.detection._utils import Matcher

import maskrcnn_fast.ops as ops
from .fuzzlib import CUDA, FLOATS, boxes, devices, dtypes, non_contiguous
from maskrcnn_fast.ops import reference as ref

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


# ---- box_iou ----------------------------------------------------------------------------------

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


# ---- match_boxes ------------------------------------------------------------------------------

THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 1.0, 0.4, float(torch.tensor(0.7, dtype=torch.float32)), 1e-8,
              -math.inf, math.inf, -0.5, 2.0]


def _tv_match(gt, gt_counts, bx, box_counts, high, low, allow):
    """torchvision, image by image (CPU); an image without ground truth is all -1."""
    n, t = gt.shape[0], bx.shape[-2]
    out = torch.full((n, t), -1, dtype=torch.int64)
    for i in range(n):
        g = int(gt_counts[i])
        k = t if box_counts is None else int(box_counts[i])
        b = bx if bx.dim() == 2 else bx[i]
        if g == 0 or k == 0:
            continue
        out[i, :k] = Matcher(high, low, allow)(torchvision.ops.box_iou(gt[i, :g], b[:k]))
    return out


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
    want = _tv_match(gt, gt_counts, bx, box_counts, high, low, allow)
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


# ---- mask_targets -----------------------------------------------------------------------------

MAX_TV_SAMPLES = 200_000  # per call: torchvision's adaptive grid is unbounded
MAX_OUR_SAMPLES = 2_000_000  # our roi_align on the float copy (the grid capped at 1024)


def _samples(b, m, cap=1024):
    """Float64[K]: bilinear samples roi_align takes for each box (aligned=False, adaptive grid
    capped at ``cap`` per side, as ours is at 1024; inf for non-finite boxes)."""
    w = (b[:, 2] - b[:, 0]).clamp(min=1.0)
    h = (b[:, 3] - b[:, 1]).clamp(min=1.0)
    gh, gw = torch.ceil(h / m), torch.ceil(w / m)
    n = gh.clamp(max=cap) * gw.clamp(max=cap) * m * m
    return torch.where(torch.isfinite(b).all(1) & torch.isfinite(gh * gw), n, torch.full_like(n, math.inf))


@st.composite
def _mask_problem(draw):
    dtype = draw(dtypes)
    images = draw(st.integers(0, 3))
    nonfinite = draw(st.integers(0, 3)) == 0
    extreme = draw(st.booleans())
    masks, bx, idx = [], [], []
    for _ in range(images):
        g, h, w = draw(st.integers(0, 3)), draw(st.integers(0, 12)), draw(st.integers(0, 12))
        if draw(st.integers(0, 5)) == 0:
            h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
        kind = draw(st.sampled_from(["binary", "binary", "bool", "values", "blocks"]))
        if kind == "values":  # uint8 values are numbers, as in the float copy
            m = torch.randint(0, 256, (g, h, w), generator=gen, dtype=torch.uint8)
        elif kind == "blocks":
            m = (torch.rand(g, h // 3 + 1, w // 3 + 1, generator=gen) > 0.5)
            m = m.repeat_interleave(3, 1).repeat_interleave(3, 2)[:, :h, :w].to(torch.uint8)
        else:
            m = (torch.rand(g, h, w, generator=gen) > 0.5).to(torch.uint8)
        if kind == "bool":
            m = m.bool()
        layout = draw(st.sampled_from(["contiguous", "contiguous", "transposed", "strided"]))
        if layout == "transposed":
            m = m.transpose(1, 2).contiguous().transpose(1, 2)
        elif layout == "strided":
            m = torch.stack([m, m], dim=-1)[..., 1]
        k = draw(st.integers(0, 4)) if g else 0
        size = float(max(h, w, 1))
        bx.append(draw(boxes(k, lo=-0.3 * size - 2, hi=1.3 * size + 2, nonfinite=nonfinite,
                             extreme=extreme, size_hi=size + 2)).to(dtype))
        idx.append(torch.tensor(draw(st.lists(st.integers(0, max(g - 1, 0)), min_size=k, max_size=k)),
                                dtype=torch.int64))
        masks.append(m)
    m_out = draw(st.sampled_from([1, 2, 3, 5, 7, 14, 28]))
    return masks, bx, idx, m_out, dtype


def _rois(bx, idx, dtype):
    if not bx:
        return torch.zeros(0, 5, dtype=dtype)
    return torch.cat([torch.cat([i[:, None].to(dtype), b], 1) for i, b in zip(idx, bx)])


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(problem=_mask_problem(), device=devices, data=st.data())
def test_fuzz_mask_targets(problem, device, data):
    masks, bx, idx, m, dtype = problem
    k = sum(b.shape[0] for b in bx)
    if data.draw(st.booleans()) and bx:  # one [K, 4] tensor, rows in any order, with image_index
        flat, flat_idx = torch.cat(bx), torch.cat(idx)
        image = torch.cat([torch.full((b.shape[0],), i, dtype=torch.int64) for i, b in enumerate(bx)])
        perm = torch.randperm(k, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))))
        bx, idx, image = [flat[perm]], [flat_idx[perm]], image[perm]
        got = ops.mask_targets([t.to(device) for t in masks], non_contiguous(bx[0], data.draw).to(device),
                               idx[0].to(device), m, image_index=image.to(device))
        want_ref = ref.mask_targets(masks, bx[0], idx[0], m, image_index=image)
    else:
        image = None
        got = ops.mask_targets([t.to(device) for t in masks], [b.to(device) for b in bx],
                               [i.to(device) for i in idx], m)
        want_ref = ref.mask_targets(masks, bx, idx, m)
    assert got.shape == (k, m, m) and got.dtype == (bx[0].dtype if bx else got.dtype)
    got = got.cpu()
    all_boxes = torch.cat(bx) if bx else torch.zeros(0, 4, dtype=dtype)
    all_idx = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.int64)
    if image is None:
        image = torch.cat([torch.full((b.shape[0],), i, dtype=torch.int64) for i, b in enumerate(bx)]) \
            if bx else torch.zeros(0, dtype=torch.int64)
    finite = torch.isfinite(all_boxes).all(1)
    assert bool((got[~finite] == 0).all()), "non-finite boxes give zeros"
    samples = _samples(all_boxes.double(), m)
    vmax = max([float(t.max()) for t in masks if t.numel()] + [1.0])

    # our roi_align on the float copy in boxes' dtype: bitwise (bounded grids, to stay fast)
    ours_ok = samples.cumsum(0).nan_to_num(math.inf) <= MAX_OUR_SAMPLES
    ours_ok |= ~finite
    # torchvision's semantics (float32/float64, finite boxes, small grids)
    tv_ok = finite & (_samples(all_boxes.double(), m, math.inf).cumsum(0) <= MAX_TV_SAMPLES)
    for i, mk in enumerate(masks):
        rows = (image == i)
        if not bool(rows.any()):
            continue
        sel = rows & ours_ok
        if bool(sel.any()):
            rois = torch.cat([all_idx[sel, None].to(dtype), all_boxes[sel]], 1)
            copy = mk[:, None].to(dtype)
            expect = torch.ops.maskrcnn_fast.roi_align(copy, rois, 1.0, m, m, -1, False)[:, 0]
            assert torch.equal(got[sel], expect)
        sel = rows & tv_ok
        if dtype in (torch.float32, torch.float64) and bool(sel.any()) and mk.shape[1] and mk.shape[2]:
            rois = torch.cat([all_idx[sel, None].to(dtype), all_boxes[sel]], 1)
            tv = torchvision.ops.roi_align(mk[:, None].to(dtype), rois, (m, m), spatial_scale=1.0,
                                           sampling_ratio=-1, aligned=False)[:, 0]
            torch.testing.assert_close(got[sel], tv, rtol=0, atol=0)
    # the reference in the compute dtype (float64: also the float64 oracle)
    assert want_ref.dtype == got.dtype
    if dtype == torch.float64:
        torch.testing.assert_close(got, want_ref, rtol=0, atol=1e-12 * vmax)
    else:
        want32 = ref.mask_targets(masks, all_boxes.float(), all_idx, m, image_index=image)
        torch.testing.assert_close(got.double(), want32.double(), rtol=torch.finfo(dtype).eps,
                                   atol=1e-5 * vmax)


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_mask_targets_errors(data):
    draw = data.draw
    images = draw(st.integers(1, 3))
    masks = [torch.ones(draw(st.integers(1, 3)), 5, 6, dtype=torch.uint8) for _ in range(images)]
    k = draw(st.integers(1, 4))
    bx = torch.tensor([[0.0, 0.0, 4.0, 4.0]]).repeat(k, 1)
    image = torch.tensor(draw(st.lists(st.integers(0, images - 1), min_size=k, max_size=k)))
    gt = torch.tensor([draw(st.integers(0, masks[int(i)].shape[0] - 1)) for i in image])
    j = draw(st.integers(0, k - 1))
    bad = draw(st.sampled_from(["image_index", "matched_index", "boxes", "size", "masks"]))
    size = draw(st.sampled_from([1, 7]))
    if bad == "image_index":
        image[j] = draw(st.sampled_from([-1, images, images + 5, -(2 ** 40)]))
    elif bad == "matched_index":
        gt[j] = draw(st.sampled_from([-1, masks[int(image[j])].shape[0], 2 ** 40]))
    elif bad == "boxes":
        bx = draw(st.sampled_from([bx[:, :3], bx.long(), bx[None], bx.repeat(1, 2)]))
    elif bad == "size":
        size = draw(st.sampled_from([0, -1, 2 ** 31, 2 ** 14]))
    else:
        masks[0] = draw(st.sampled_from([masks[0][0], masks[0].float(), masks[0][None], masks[0].to(torch.int32)]))
    with pytest.raises(RuntimeError, match=bad if bad != "masks" else r"masks\[0\]"):
        torch.ops.maskrcnn_fast.mask_targets(masks, bx, image, gt, size)
    if bad in ("image_index", "matched_index"):
        with pytest.raises(ValueError, match=bad[:7]):
            ref.mask_targets(masks, bx, gt, size, image_index=image)
        if CUDA:  # no sync on CUDA: that box gets zeros, the others their targets
            out = torch.ops.maskrcnn_fast.mask_targets([t.cuda() for t in masks], bx.cuda(), image.cuda(),
                                                        gt.cuda(), size).cpu()
            assert bool((out[j] == 0).all())
