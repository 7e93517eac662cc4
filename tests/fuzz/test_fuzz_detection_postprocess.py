"""Fuzz: detection_postprocess against the float64 reference and torchvision's
RoIHeads.postprocess_detections (tolerances of tests/test_detection_postprocess.py).
torchvision's batched_nms is patched to its exact per-class path, as that test does.

Logits are continuous random values (no ties) in float32/float64. Half and bfloat16 are checked
for their invariants and against the float32 op on the upcast inputs
(support.fuzz.half_consistent). With NaN/Inf inputs (documented: NaN logits and NaN boxes are
dropped, +-Inf coordinates clipped) the result must still be the reference's, with finite boxes
inside the image in every valid row and zero padding. Bad arguments raise naming the argument.
"""
import math
from unittest import mock

import pytest
import torch
from hypothesis import given, strategies as st
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops
from torchvision.ops.boxes import _batched_nms_vanilla

from maskrcnn_fast.ops import detection_postprocess
from maskrcnn_fast.ops import reference as ref
from support.fuzz import CLIP, boxes, check_valid_rows, devices, dtypes, half_consistent, tensor, tols


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_detection_postprocess(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    n, p, c = draw(st.integers(0, 2)), draw(st.integers(0, 6)), draw(st.integers(1, 4))
    nonfinite = draw(st.booleans())
    props = draw(boxes(n * p, lo=-4, hi=60, nonfinite=nonfinite, size_hi=40)).reshape(n, p, 4)
    logits = tensor(draw, (n * p, c), -3, 3, nonfinite)
    logits[:, 1:] += draw(st.sampled_from([0.0, 2.0]))
    reg = tensor(draw, (n * p, 4 * c), -2, 2, nonfinite)
    if draw(st.booleans()):
        reg.view(-1)[::5] = draw(st.sampled_from([100.0, -200.0]))
    sizes = torch.tensor([(draw(st.integers(0, 64)), draw(st.integers(0, 64))) for _ in range(n)],
                         dtype=torch.int64).reshape(n, 2)
    counts = None
    if draw(st.booleans()):
        counts = torch.tensor([draw(st.integers(0, p)) for _ in range(n)], dtype=torch.int64)
    weights = draw(st.sampled_from([(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)]))
    score_thresh = draw(st.sampled_from([0.05, 0.0, 0.3, -1.0]))
    nms_thresh = draw(st.sampled_from([0.5, 0.0, 0.7, 1.0]))
    d = draw(st.integers(0, 12))
    args = (weights, CLIP, score_thresh, nms_thresh, d)
    logits, reg, props = logits.to(dtype), reg.to(dtype), props.to(dtype)
    out = detection_postprocess(logits.to(device), reg.to(device), props.to(device),
                                None if counts is None else counts.to(device), sizes.to(device), *args)
    bx, sc, lb, cn, ri = (t.cpu() for t in out)
    assert bx.shape == (n, d, 4) and sc.shape == (n, d) and lb.shape == (n, d) and cn.shape == (n,)
    assert ri.shape == (n, d) and bx.dtype == sc.dtype == dtype
    check_valid_rows(bx, sc, cn, sizes)
    for i, k in enumerate(cn.tolist()):
        assert bool((lb[i, :k] >= 1).all()) and bool((lb[i, :k] < c).all())
        assert bool((lb[i, k:] == 0).all()) and bool((ri[i, k:] == 0).all())
        limit = p if counts is None else int(counts[i])
        assert bool((ri[i, :k] >= i * p).all()) and bool((ri[i, :k] < i * p + limit).all())
    if dtype in (torch.float16, torch.bfloat16):
        f = detection_postprocess(logits.float().to(device), reg.float().to(device),
                                  props.float().to(device),
                                  None if counts is None else counts.to(device), sizes.to(device), *args)
        no_flip = score_thresh < 0 and nms_thresh == 1.0
        half_consistent(bx, sc, cn, f[0].cpu(), f[1].cpu(), f[3].cpu(), dtype, no_flip)
        return
    eps = torch.finfo(dtype).eps
    box_tol, score_tol = tols(dtype, 64), dict(rtol=8 * eps, atol=0)
    r = ref.detection_postprocess(logits, reg, props, counts, sizes, *args)
    assert torch.equal(cn, r[3]) and torch.equal(lb, r[2]) and torch.equal(ri, r[4])
    torch.testing.assert_close(bx, r[0], **box_tol)
    torch.testing.assert_close(sc, r[1], **score_tol)
    if n and p and not nonfinite:
        ks = counts.tolist() if counts is not None else [p] * n
        rows = torch.cat([torch.arange(k) + i * p for i, k in enumerate(ks)])
        heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, weights, score_thresh, nms_thresh, d)
        heads.box_coder.bbox_xform_clip = CLIP
        with mock.patch.object(box_ops, "batched_nms", _batched_nms_vanilla):
            tb, ts, tl = heads.postprocess_detections(
                logits[rows], reg[rows], [props[i, :k] for i, k in enumerate(ks)],
                [tuple(s) for s in sizes.tolist()])
        for i in range(n):
            k = int(cn[i])
            assert torch.equal(lb[i, :k], tl[i])
            torch.testing.assert_close(bx[i, :k], tb[i], **box_tol)
            torch.testing.assert_close(sc[i, :k], ts[i], **score_tol)


@given(data=st.data())
def test_fuzz_detection_postprocess_errors(data):
    draw = data.draw
    logits, reg, props = torch.zeros(4, 3), torch.zeros(4, 12), torch.zeros(2, 2, 4)
    bad = draw(st.sampled_from(["class_logits", "box_regression", "image_sizes", "nms_thresh",
                                "detections_per_img", "score_thresh", "proposal_counts"]))
    kw = dict(weights=(10.0, 10.0, 5.0, 5.0), bbox_xform_clip=CLIP, score_thresh=0.05,
              nms_thresh=0.5, detections_per_img=5)
    a = [logits, reg, props, None, torch.tensor([[8, 8], [9, 9]])]
    if bad == "class_logits":
        a[0] = torch.zeros(5, 3)
    elif bad == "box_regression":
        a[1] = torch.zeros(4, 8)
    elif bad == "image_sizes":
        a[4] = torch.tensor([[8, 8]])
    elif bad == "proposal_counts":
        a[3] = torch.zeros(3, dtype=torch.int64)
    elif bad == "score_thresh":
        kw[bad] = math.nan
    else:
        kw[bad] = -draw(st.sampled_from([1, 3]))
    with pytest.raises((RuntimeError, ValueError), match=bad):
        detection_postprocess(*a, **kw)
