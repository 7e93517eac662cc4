"""detection_postprocess against torchvision's RoIHeads.postprocess_detections (the oracle, on
the CPU) and the pure-PyTorch reference.

Logits are continuous random values, so probabilities do not tie. torchvision's batched_nms
takes its coordinate-offset path below 1000 candidates on the CPU, which rounds coordinates
differently (offsets up to C * image size); the tests patch in its exact per-class path
(_batched_nms_vanilla), which is what both paths mean. Boxes may differ by an ulp of the box
size where torch's exp rounds differently from ours, probabilities by an ulp or two (softmax).
"""
import math

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops
from torchvision.ops.boxes import _batched_nms_vanilla

from maskrcnn_fast.ops import detection_postprocess, detections_to_list
from maskrcnn_fast.ops import reference as ref
from support.ops import DET_H, DET_W, detection_inputs

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


@pytest.fixture(autouse=True)
def _exact_batched_nms(monkeypatch):
    monkeypatch.setattr(box_ops, "batched_nms", _batched_nms_vanilla)


def _torchvision(logits, reg, props, counts, sizes, score_thresh, nms_thresh, d):
    n, p, _ = props.shape
    ks = counts.tolist() if counts is not None else [p] * n
    rows = torch.cat([torch.arange(k) + i * p for i, k in enumerate(ks)])
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, WEIGHTS, score_thresh, nms_thresh, d)
    return heads.postprocess_detections(
        logits.cpu()[rows], reg.cpu()[rows], [props[i, :k].cpu() for i, k in enumerate(ks)],
        [tuple(s) for s in sizes.tolist()],
    )


def _tols(dtype, scale):
    eps = torch.finfo(dtype).eps
    return dict(rtol=2 * eps, atol=4 * eps * scale), dict(rtol=8 * eps, atol=0)


@pytest.mark.parametrize("n,counts", [(1, None), (3, None), (3, [40, 33, 0])])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("score_thresh", [0.05, 0.3])
def test_matches_torchvision_and_reference(device, seed, n, counts, dtype, score_thresh):
    p, c, d = 40, 7, 60
    logits, reg, props, cnt, sizes = detection_inputs(n, p, c, dtype, device, counts)
    out = detection_postprocess(logits, reg, props, cnt, sizes, WEIGHTS, math.log(1000 / 16), score_thresh, 0.5, d)
    boxes, scores, labels, counts_out, index = out
    assert boxes.shape == (n, d, 4) and scores.shape == (n, d) and labels.shape == (n, d)
    assert labels.dtype == counts_out.dtype == index.dtype == torch.int64
    box_tol, score_tol = _tols(dtype, max(DET_H, DET_W))
    tv = _torchvision(logits, reg, props, cnt, sizes, score_thresh, 0.5, d)
    got = detections_to_list(boxes.cpu(), scores.cpu(), labels.cpu(), counts_out.cpu())
    for i, (b, s, lb, tb, ts, tl) in enumerate(zip(*got, *tv)):
        assert torch.equal(lb, tl)
        torch.testing.assert_close(b, tb, **box_tol)
        torch.testing.assert_close(s, ts, **score_tol)
    if counts is not None:
        assert counts_out[2].item() == 0
    r = ref.detection_postprocess(logits, reg, props, cnt, sizes, WEIGHTS, math.log(1000 / 16), score_thresh, 0.5, d)
    assert torch.equal(counts_out.cpu(), r[3].cpu())
    assert torch.equal(labels, r[2]) and torch.equal(index, r[4])
    torch.testing.assert_close(boxes, r[0], **box_tol)
    torch.testing.assert_close(scores, r[1], **score_tol)
    # roi_index points at the row whose softmax gave the score.
    for i, k in enumerate(counts_out.tolist()):
        probs = torch.softmax(logits[index[i, :k]].double(), -1).gather(1, labels[i, :k, None])[:, 0]
        torch.testing.assert_close(scores[i, :k].double(), probs, rtol=16 * torch.finfo(dtype).eps, atol=0)
        assert torch.all(boxes[i, k:] == 0) and torch.all(scores[i, k:] == 0) and torch.all(labels[i, k:] == 0)


def test_truncation_and_all_filtered(device, seed):
    logits, reg, props, _, sizes = detection_inputs(2, 30, 5, torch.float64, device)
    out = detection_postprocess(logits, reg, props, None, sizes, detections_per_img=4, score_thresh=0.01)
    assert out[3].tolist() == [4, 4]
    tv = _torchvision(logits, reg, props, None, sizes, 0.01, 0.5, 4)
    for i in range(2):
        assert torch.equal(out[2][i].cpu(), tv[2][i])
        torch.testing.assert_close(out[0][i].cpu(), tv[0][i], rtol=1e-15, atol=1e-12)
    none = detection_postprocess(logits, reg, props, None, sizes, score_thresh=1.0)
    assert none[3].tolist() == [0, 0] and torch.all(none[0] == 0) and torch.all(none[1] == 0)
    # Only the background class: nothing to detect.
    one = detection_postprocess(logits[:, :1], reg[:, :4], props, None, sizes)
    assert one[3].tolist() == [0, 0]


def test_chained_with_rpn_proposals_padding(device, seed):
    # Padded proposals + counts straight from rpn_proposals: padding rows are ignored.
    logits, reg, props, _, sizes = detection_inputs(2, 20, 4, torch.float32, device)
    counts = torch.tensor([20, 9], device=device)
    padded = props.clone()
    padded[1, 9:] = 0
    a = detection_postprocess(logits, reg, padded, counts, sizes, score_thresh=0.05)
    b = ref.detection_postprocess(logits, reg, props, counts, sizes, score_thresh=0.05)
    assert torch.equal(a[3], b[3]) and torch.equal(a[2], b[2])


def test_noncontiguous(device, seed):
    logits, reg, props, _, sizes = detection_inputs(2, 25, 6, torch.float32, device)
    expected = detection_postprocess(logits, reg, props, None, sizes)
    got = detection_postprocess(
        logits.t().contiguous().t(), torch.stack([reg, reg], 1)[:, 0],
        props.transpose(1, 2).contiguous().transpose(1, 2), None, sizes.t().contiguous().t(),
    )
    for e, o in zip(expected, got):
        assert torch.equal(e, o)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(device, seed, dtype):
    logits, reg, props, _, sizes = detection_inputs(2, 30, 5, dtype, device, extreme=False)
    boxes, scores, labels, counts, _ = detection_postprocess(logits, reg, props, None, sizes)
    assert boxes.dtype == dtype and scores.dtype == dtype
    r = ref.detection_postprocess(logits.float(), reg.float(), props.float(), None, sizes)
    for i, k in enumerate(counts.tolist()):
        assert k > 0 and abs(k - r[3][i].item()) <= max(2, k // 10)
        assert torch.all(scores[i, 1:k] <= scores[i, : k - 1])
        assert torch.all(boxes[i, :k, 2] <= sizes[i, 1]) and torch.all(boxes[i, :k, 3] <= sizes[i, 0])


def test_nan_inputs(device, seed):
    logits, reg, props, _, sizes = detection_inputs(1, 30, 5, torch.float32, device)
    logits[:3, 1] = float("nan")
    reg[3:6] = float("nan")
    boxes, scores, labels, counts, index = detection_postprocess(logits, reg, props, None, sizes, score_thresh=0.01)
    k = counts[0].item()
    assert k > 0 and torch.isfinite(boxes[0, :k]).all() and torch.isfinite(scores[0, :k]).all()
    assert torch.all(index[0, :k] >= 6)


def test_opcheck(device, seed):
    logits, reg, props, counts, sizes = detection_inputs(2, 12, 4, torch.float32, device, counts=[12, 5])
    for cnt in (counts, None):
        torch.library.opcheck(
            torch.ops.maskrcnn_fast.detection_postprocess.default,
            (logits, reg, props, cnt, sizes, list(WEIGHTS), math.log(1000 / 16), 0.05, 0.5, 10),
        )


def test_bad_inputs(device, seed):
    logits, reg, props, counts, sizes = detection_inputs(2, 10, 4, torch.float32, device, counts=[10, 5])

    def call(lg=logits, rg=reg, pr=props, pc=counts, sz=sizes, w=WEIGHTS, nms=0.5, d=10):
        return detection_postprocess(lg, rg, pr, pc, sz, w, math.log(1000 / 16), 0.05, nms, d)

    with pytest.raises((RuntimeError, ValueError), match="class_logits"):
        call(lg=logits[:-1])
    with pytest.raises((RuntimeError, ValueError), match="class_logits"):
        call(lg=logits.long())
    with pytest.raises((RuntimeError, ValueError), match="box_regression"):
        call(rg=reg[:, :-4])
    with pytest.raises((RuntimeError, ValueError), match="proposals"):
        call(pr=props[..., :3])
    with pytest.raises((RuntimeError, ValueError), match="proposal_counts"):
        call(pc=counts[:1])
    with pytest.raises((RuntimeError, ValueError), match="proposal_counts"):
        call(pc=counts.float())
    with pytest.raises((RuntimeError, ValueError), match="image_sizes"):
        call(sz=sizes.float())
    with pytest.raises((RuntimeError, ValueError), match="weights"):
        call(w=(1.0, 1.0))
    with pytest.raises((RuntimeError, ValueError), match="nms_thresh"):
        call(nms=-1.0)
    with pytest.raises((RuntimeError, ValueError), match="detections_per_img"):
        call(d=-1)
    if device == "cpu":
        with pytest.raises(RuntimeError, match="proposal_counts"):
            call(pc=counts + 10)
        with pytest.raises(RuntimeError, match="image_sizes"):
            call(sz=-sizes)
