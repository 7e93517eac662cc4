"""match_boxes against torchvision's Matcher on torchvision's box_iou, image by image (CPU, the
oracle), and the pure-PyTorch reference (float64 too).

Results must be identical index tensors. Boxes on a coarse integer grid make exact IoU ties
(between ground truths, between boxes, and with the thresholds) common.
"""
import pytest
import torch
import torchvision

from maskrcnn_fast.ops import match_boxes
from maskrcnn_fast.ops import reference as ref
from support.ops import match_problem, match_random_boxes, near_boxes, pad_rows, torchvision_match

RPN = (0.7, 0.3, True)
ROI = (0.5, 0.5, False)


def _check(device, gt, counts, boxes, bc, params, want=None):
    args = (gt.to(device), counts.to(device), boxes.to(device), None if bc is None else bc.to(device))
    out = match_boxes(*args, *params)
    assert out.dtype == torch.int64 and out.device.type == torch.device(device).type
    assert out.shape == (gt.shape[0], boxes.shape[-2])
    if want is None:
        want = torchvision_match(gt, counts, boxes, bc, *params)
    assert torch.equal(out.cpu(), want)
    assert torch.equal(ref.match_boxes(*args, *params).cpu(), want)
    return out.cpu()


@pytest.mark.parametrize("params", [RPN, ROI, (0.6, 0.2, False), (0.4, 0.4, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_matches_torchvision(device, seed, params, dtype):
    gt, counts, boxes, bc = match_problem([5, 1, 17], 400, dtype, box_counts=[400, 350, 3])
    _check(device, gt, counts, boxes, bc, params)


@pytest.mark.parametrize("params", [RPN, ROI])
def test_grid_ties_match_torchvision(device, seed, params):
    # coarse grid: duplicate gts, duplicate boxes, IoU ties between gts and with the thresholds
    gt, counts, boxes, bc = match_problem([9, 30, 4], 600, grid=8.0, box_counts=[600, 599, 1])
    out = _check(device, gt, counts, boxes, bc, params)
    assert (out >= 0).any()


@pytest.mark.parametrize("params", [RPN, ROI])
def test_shared_boxes(device, seed, params):
    gt, counts, boxes, bc = match_problem([6, 3, 12], 800, shared=True)
    assert boxes.dim() == 2
    out = _check(device, gt, counts, boxes, bc, params)
    expanded = match_boxes(gt.to(device), counts.to(device), boxes.expand(3, -1, -1).to(device), None, *params)
    assert torch.equal(out, expanded.cpu())


def test_many_gt_chunks(device, seed):
    # more ground truths than the CUDA kernel stages in shared memory at once (128)
    gt, counts, boxes, bc = match_problem([300, 129], 500, box_counts=[500, 300])
    _check(device, gt, counts, boxes, bc, RPN)


@pytest.mark.parametrize("params", [RPN, ROI])
def test_float64_reference(device, seed, params):
    gt, counts, boxes, bc = match_problem([4, 11], 500, torch.float64, box_counts=[500, 321])
    out = match_boxes(gt.to(device), counts.to(device), boxes.to(device), bc.to(device), *params)
    want = ref.match_boxes(gt, counts, boxes, bc, *params)
    assert torch.equal(out.cpu(), want)


def test_no_gt(device, seed):
    gt, counts, boxes, bc = match_problem([0, 3, 0], 100)
    out = _check(device, gt, counts, boxes, bc, RPN)
    assert (out[0] == -1).all() and (out[2] == -1).all()
    # G = 0 for every image
    out = match_boxes(torch.zeros(2, 0, 4, device=device), torch.zeros(2, dtype=torch.int64, device=device),
                      boxes[:2].to(device), None, *RPN)
    assert out.shape == (2, 100) and (out == -1).all()


def test_no_boxes(device, seed):
    gt, counts, _, _ = match_problem([3, 2], 1)
    out = match_boxes(gt.to(device), counts.to(device), torch.zeros(2, 0, 4, device=device), None, *RPN)
    assert out.shape == (2, 0)
    out = match_boxes(gt.to(device), counts.to(device), torch.zeros(0, 4, device=device), None, *RPN)
    assert out.shape == (2, 0)
    out = match_boxes(gt[:0].to(device), counts[:0].to(device), torch.zeros(5, 4, device=device), None, *RPN)
    assert out.shape == (0, 5)
    # box_counts 0 for one image: all of its rows are padding
    gt, counts, boxes, bc = match_problem([3, 2], 50, box_counts=[0, 50])
    out = _check(device, gt, counts, boxes, bc, RPN)
    assert (out[0] == -1).all()


@pytest.mark.parametrize("allow", [False, True])
def test_no_positives(device, seed, allow):
    # every box far from every gt: IoU 0 everywhere. With low-quality matches every box ties
    # at each gt's best (0) and gets its argmax, gt 0: torchvision's behaviour.
    gt = pad_rows([match_random_boxes(3) * 0.1], 3)
    boxes = match_random_boxes(200)[None] * 0.1 + 1000
    counts = torch.tensor([3])
    out = _check(device, gt, counts, boxes, None, (0.7, 0.3, allow))
    assert (out == (0 if allow else -1)).all()


def test_all_boxes_one_gt(device, seed):
    gt = torch.tensor([[[0.0, 0, 100, 100], [500, 500, 600, 600], [0, 0, 0, 0]]])
    boxes = (gt[0, 0] + torch.randn(300, 4) * 3)[None]
    out = _check(device, gt, torch.tensor([2]), boxes, None, RPN)
    assert ((out == 0) | (out == -2)).all() and (out == 0).any()


def test_duplicate_gt_and_boxes(device):
    gt = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30]]])
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10], [22, 22, 31, 31], [22, 22, 31, 31],
                           [50, 50, 60, 60]]])
    out = _check(device, gt, torch.tensor([4]), boxes, None, RPN)
    assert out.tolist() == [[0, 0, 2, 2, -1]]  # ties: the lowest gt; both duplicates low-quality
    out = _check(device, gt, torch.tensor([4]), boxes, None, ROI)
    assert out.tolist() == [[0, 0, 2, 2, -1]]


@pytest.mark.parametrize("allow", [False, True])
def test_degenerate_boxes_nan(device, allow):
    # Two zero-area boxes that do not overlap: IoU 0 / 0 = NaN. torchvision's max picks the NaN
    # (its index survives every threshold) and a gt with a NaN IoU has no low-quality match.
    gt = torch.tensor([[[5.0, 5, 5, 5], [0, 0, 10, 10], [3, 3, 3, 9]]])
    boxes = torch.tensor([[[5.0, 5, 5, 5], [0, 0, 10, 10], [7, 7, 7, 7], [0, 0, 9, 9],
                           [50, 50, 60, 60], [3, 3, 3, 9], [float("nan"), 0, 1, 1]]])
    out = _check(device, gt, torch.tensor([3]), boxes, None, (0.7, 0.3, allow))
    assert out[0, 0] == 0 and out[0, 2] == 0 and out[0, 6] == 0  # the first NaN


def test_threshold_rounding(device):
    # IoU exactly float32(0.7) (which is below 0.7 in float64): torch compares in float32, so it
    # is a match; 0.5 exactly is a match for the box head.
    gt = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10]]])
    iou_07 = torch.tensor(0.7, dtype=torch.float32)
    boxes = torch.tensor([[[0.0, 0, 10, 5], [0, 0, 10, 7], [0, 0, 10, 3], [0, 0, 10, 2.9]]])
    assert torchvision.ops.box_iou(gt[0], boxes[0])[0, 1] == iou_07
    out = _check(device, gt, torch.tensor([1]), boxes, None, (0.7, 0.3, False))
    assert out.tolist() == [[-2, 0, -2, -1]]
    _check(device, gt, torch.tensor([2]), boxes, None, ROI)


def test_padding_is_ignored(device, seed):
    # junk in the padding rows (NaN, huge boxes) changes nothing
    gt, counts, boxes, bc = match_problem([3, 5], 300, box_counts=[300, 200])
    out = match_boxes(gt, counts, boxes, bc, *RPN)
    gt2, boxes2 = gt.clone(), boxes.clone()
    gt2[0, 3:] = float("nan")
    boxes2[1, 200:] = torch.tensor([0.0, 0, 2000, 2000])
    assert torch.equal(match_boxes(gt2.to(device), counts.to(device), boxes2.to(device), bc.to(device), *RPN).cpu(), out)
    assert (out[1, 200:] == -1).all()


def test_non_contiguous(device, seed):
    gt, counts, boxes, bc = match_problem([4, 7], 400, box_counts=[400, 100])
    gt_nc = gt.transpose(0, 1).contiguous().transpose(0, 1)
    boxes_nc = boxes.repeat(1, 1, 2)[..., ::2]
    counts_nc = torch.stack([counts, counts], 1)[:, 0]
    assert not gt_nc.is_contiguous() and not boxes_nc.is_contiguous() and not counts_nc.is_contiguous()
    _check(device, gt_nc, counts_nc, boxes_nc, bc, RPN)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(device, seed, dtype):
    gt, counts, boxes, bc = match_problem([5, 12], 500, dtype, box_counts=[500, 432])
    _check(device, gt, counts, boxes, bc, RPN)
    _check(device, gt, counts, boxes, bc, ROI)


def test_mixed_dtypes_promote(device, seed):
    gt, counts, boxes, bc = match_problem([5, 2], 300)
    out = match_boxes(gt.to(device), counts.to(device), boxes.double().to(device), None, *RPN)
    assert torch.equal(out, match_boxes(gt.double().to(device), counts.to(device), boxes.double().to(device), None, *RPN))


@pytest.mark.parametrize("allow", [False, True])
def test_opcheck(device, seed, allow):
    gt, counts, boxes, bc = match_problem([3, 1], 40, box_counts=[40, 7])
    op = torch.ops.maskrcnn_fast.match_boxes.default
    torch.library.opcheck(op, (gt.to(device), counts.to(device), boxes.to(device), bc.to(device), 0.7, 0.3, allow))
    torch.library.opcheck(op, (gt.to(device), counts.to(device), boxes[0].to(device), None, 0.5, 0.5, allow))


def test_compile(device, seed):
    gt, counts, boxes, bc = match_problem([3, 1], 40, box_counts=[40, 7])
    args = (gt.to(device), counts.to(device), boxes.to(device), bc.to(device), *RPN)
    f = torch.compile(match_boxes, fullgraph=True, backend="eager")
    assert torch.equal(f(*args), match_boxes(*args))


def _good():
    return dict(gt_boxes=torch.zeros(2, 3, 4), gt_counts=torch.tensor([1, 3]), boxes=torch.zeros(2, 5, 4),
                box_counts=torch.tensor([5, 0]), high_threshold=0.7, low_threshold=0.3,
                allow_low_quality_matches=True)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(gt_boxes=torch.zeros(3, 4)), "gt_boxes"),
        (dict(gt_boxes=torch.zeros(2, 3, 5)), "gt_boxes"),
        (dict(gt_boxes=torch.zeros(2, 3, 4, dtype=torch.int64)), "gt_boxes"),
        (dict(boxes=torch.zeros(2, 5, 3)), "boxes"),
        (dict(boxes=torch.zeros(5)), "boxes"),
        (dict(boxes=torch.zeros(3, 5, 4)), "boxes"),
        (dict(boxes=torch.zeros(2, 5, 4, dtype=torch.float64)), "gt_boxes and boxes"),
        (dict(gt_counts=torch.tensor([1, 4])), "gt_counts.*outside"),
        (dict(gt_counts=torch.tensor([-1, 2])), "gt_counts.*outside"),
        (dict(gt_counts=torch.tensor([1, 2], dtype=torch.int32)), "gt_counts"),
        (dict(gt_counts=torch.tensor([1, 2, 3])), "gt_counts"),
        (dict(gt_counts=torch.tensor([[1, 2]])), "gt_counts"),
        (dict(box_counts=torch.tensor([6, 0])), "box_counts.*outside"),
        (dict(box_counts=torch.tensor([1])), "box_counts"),
        (dict(box_counts=torch.tensor([1.0, 2.0])), "box_counts"),
        (dict(high_threshold=0.2), "low_threshold"),
        (dict(low_threshold=float("nan")), "low_threshold"),
    ],
)
def test_bad_input(device, change, match):
    kw = {**_good(), **change}
    kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    if device == "cuda" and "outside" in match:
        # data: checked on the CPU; clamped on CUDA (no host synchronisation)
        out = torch.ops.maskrcnn_fast.match_boxes(*kw.values())
        assert out.shape == (2, 5)
        return
    with pytest.raises(RuntimeError, match=match):
        torch.ops.maskrcnn_fast.match_boxes(*kw.values())


@pytest.mark.cuda
def test_device_mismatch():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    kw = _good()
    kw["gt_counts"] = kw["gt_counts"].cuda()
    with pytest.raises(RuntimeError, match="gt_counts and gt_boxes"):
        torch.ops.maskrcnn_fast.match_boxes(*kw.values())


# ---- the model's training targets --------------------------------------------------------------


def _targets(gt_counts, g):
    out = []
    for k in gt_counts:
        b = match_random_boxes(k) * 0.5
        out.append({"boxes": b, "labels": torch.randint(1, 5, (k,), generator=g)})
    return out


@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_rpn_targets_match_torchvision(seed, impl):
    from torchvision.models.detection.rpn import RegionProposalNetwork as TvRPN

    from maskrcnn_fast.models.opset import get_ops
    from maskrcnn_fast.models.rpn import RegionProposalNetwork

    ops = get_ops(impl)
    g = torch.Generator().manual_seed(seed)
    targets = _targets([4, 0, 9], g)
    anchors = torch.cat([near_boxes(torch.cat([t["boxes"] for t in targets]), 3000), match_random_boxes(1000) * 0.5])
    kw = dict(fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5)
    tv = TvRPN(None, None, pre_nms_top_n=dict(training=1, testing=1),
               post_nms_top_n=dict(training=1, testing=1), nms_thresh=0.7, **kw)
    ours = RegionProposalNetwork(None, None, ops.BoxCoder((1.0, 1.0, 1.0, 1.0)), None,
                                 pre_nms_top_n=dict(training=1, testing=1),
                                 post_nms_top_n=dict(training=1, testing=1), nms_thresh=0.7,
                                 match_boxes=ops.match_boxes, **kw)
    want_labels, want_matched = tv.assign_targets_to_anchors([anchors] * 3, targets)
    labels, matched = ours.assign_targets_to_anchors(anchors, targets)
    assert torch.equal(labels, torch.stack(want_labels))
    assert torch.equal(matched, torch.stack(want_matched))


@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_roi_targets_match_torchvision(seed, impl):
    from torchvision.models.detection.roi_heads import RoIHeads as TvRoIHeads

    from maskrcnn_fast.models.opset import get_ops
    from maskrcnn_fast.models.roi_heads import RoIHeads

    ops = get_ops(impl)
    g = torch.Generator().manual_seed(seed)
    targets = _targets([5, 0, 12], g)
    counts = [300, 170, 0]
    p = 320
    props = torch.zeros(3, p, 4)
    for i, (k, t) in enumerate(zip(counts, targets)):
        pool = t["boxes"] if len(t["boxes"]) else match_random_boxes(3) * 0.5
        props[i, :k] = near_boxes(pool, k)
    weights = (10.0, 10.0, 5.0, 5.0)
    kw = dict(fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=64, positive_fraction=0.25,
              score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    tv = TvRoIHeads(None, None, None, bbox_reg_weights=weights, **kw)
    ours = RoIHeads(None, None, None, ops.BoxCoder(weights), None, None, match_boxes=ops.match_boxes, **kw)
    state = torch.get_rng_state()
    want = tv.select_training_samples([props[i, :k] for i, k in enumerate(counts)], targets)
    torch.set_rng_state(state)
    got = ours.select_training_samples(props, torch.tensor(counts), targets)
    for j, (w, o) in enumerate(zip(want, got)):  # proposals, matched, labels, regression targets
        assert len(w) == len(o) == 3
        for a, b in zip(w, o):
            # the regression targets' dw, dh: up to the rounding of log (see encode_boxes)
            tol = dict(rtol=1e-6, atol=1e-6) if j == 3 else dict(rtol=0, atol=0)
            torch.testing.assert_close(b, a, **tol)
