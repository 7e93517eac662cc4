"""Every torchvision detection model with ``accelerate_torchvision()`` on and off (issue 20).

Same random weights (``weights=None, weights_backbone=None``), same inputs, small images:

- ``exact=True`` (the default), float32: detections and training losses bitwise torchvision's,
  tie order included (images of two sizes in one batch, so the padded border gives exactly tied
  scores, and every cut that torchvision makes after our batched_nms sees the same order);
- ``exact=False``, float64: eval detections torchvision's to rounding. The images are 128 x 128
  (no padding) with random pixels, so no two scores tie exactly (the fused ops order ties their
  own way: docs/accelerate.md). Training losses are not compared with exact=False: the RPN's
  proposals are torchvision's to rounding, but their order among scores within rounding of each
  other can differ, and the samplers draw by position.

The cuts torchvision makes itself (detections_per_img, the RPN's post_nms_top_n) are set above
what the models can return, so the comparison sees every candidate that survives NMS.
"""
import copy

import pytest
import torch
import torchvision
from torchvision.models import detection as D

from maskrcnn_fast import accelerate

NUM_CLASSES = 5
_RCNN = dict(min_size=128, max_size=128, box_score_thresh=0.0, box_detections_per_img=100_000,
             rpn_post_nms_top_n_test=4000, rpn_post_nms_top_n_train=4000)
_DENSE = dict(min_size=128, max_size=128, score_thresh=0.0, detections_per_img=100_000)
_SSD = dict(score_thresh=0.0, detections_per_img=100_000)

# name -> (builder, keyword arguments, kind)
MODELS = {
    "fasterrcnn_resnet50_fpn": (D.fasterrcnn_resnet50_fpn, _RCNN, "boxes"),
    "fasterrcnn_resnet50_fpn_v2": (D.fasterrcnn_resnet50_fpn_v2, _RCNN, "boxes"),
    "fasterrcnn_mobilenet_v3_large_fpn": (D.fasterrcnn_mobilenet_v3_large_fpn, _RCNN, "boxes"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        D.fasterrcnn_mobilenet_v3_large_320_fpn, dict(_RCNN, rpn_score_thresh=0.0), "boxes"),
    "maskrcnn_resnet50_fpn": (D.maskrcnn_resnet50_fpn, _RCNN, "masks"),
    "maskrcnn_resnet50_fpn_v2": (D.maskrcnn_resnet50_fpn_v2, _RCNN, "masks"),
    "keypointrcnn_resnet50_fpn": (D.keypointrcnn_resnet50_fpn, _RCNN, "keypoints"),
    "retinanet_resnet50_fpn": (D.retinanet_resnet50_fpn, _DENSE, "boxes"),
    "retinanet_resnet50_fpn_v2": (D.retinanet_resnet50_fpn_v2, _DENSE, "boxes"),
    "fcos_resnet50_fpn": (D.fcos_resnet50_fpn, _DENSE, "boxes"),
    "ssd300_vgg16": (D.ssd300_vgg16, _SSD, "boxes"),
    "ssdlite320_mobilenet_v3_large": (D.ssdlite320_mobilenet_v3_large, _SSD, "boxes"),
}
# Big backbones in float64 on 2 CPU cores: tens of seconds each.
SLOW = {"fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2",
        "keypointrcnn_resnet50_fpn", "ssd300_vgg16"}


def _params(names=MODELS):
    return [pytest.param(n, marks=pytest.mark.large) if n in SLOW else n for n in names]


@pytest.fixture(autouse=True)
def restore():
    yield
    accelerate.restore_torchvision()


def _build(name, seed, dtype=torch.float32):
    builder, kw, kind = MODELS[name]
    num_classes = 2 if kind == "keypoints" else NUM_CLASSES
    torch.manual_seed(seed)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kw)
    return model.to(dtype)


def _images(seed, sizes, dtype):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g).to(dtype) for h, w in sizes]


def _targets(seed, images, kind):
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for im in images:
        h, w = im.shape[-2:]
        k = 3
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 8 + torch.rand(k, 2, generator=g) * torch.tensor([w * 0.4 - 8, h * 0.4 - 8])
        boxes = torch.cat([xy, xy + wh], 1).to(im.dtype)
        t = {"boxes": boxes, "labels": torch.randint(1, 2 if kind == "keypoints" else NUM_CLASSES, (k,),
                                                     generator=g)}
        if kind == "masks":
            masks = torch.zeros(k, h, w, dtype=torch.uint8)
            for j, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
                masks[j, y1 + 2: y2 - 2, x1 + 2: x2 - 2] = 1
            t["masks"] = masks
        if kind == "keypoints":
            u = torch.rand(k, 17, 2, generator=g)
            pts = boxes[:, None, :2].float() + u * (boxes[:, None, 2:] - boxes[:, None, :2]).float()
            t["keypoints"] = torch.cat([pts, torch.ones(k, 17, 1)], 2)  # float32, as torchvision checks
        out.append(t)
    return out


def _run(model, images, targets=None, seed=0, **acc):
    """The model's output with the acceleration off (acc is None) or on (acc: its keywords)."""
    before = accelerate.kernel_calls()
    if acc:
        accelerate.accelerate_torchvision(**acc)
    try:
        torch.manual_seed(seed)  # the samplers draw from the global generator
        with torch.set_grad_enabled(targets is not None):
            out = model(images, targets) if targets is not None else model(images)
    finally:
        accelerate.restore_torchvision()
    after = accelerate.kernel_calls()
    ours = {k: after[k] - before.get(k, 0) for k in after if ":" not in k and after[k] != before.get(k, 0)}
    return out, ours


def _assert_equal_detections(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        assert w["boxes"].shape[0] > 0
        for k in w:
            assert g[k].dtype == w[k].dtype, k
            assert torch.equal(g[k], w[k]), k


def _canonical(d):
    """Detections in (label, x1, y1, x2, y2) order instead of by score (random weights give many
    scores within rounding of each other: SSDlite's are all about 1 / num_classes, and its boxes
    are its default boxes to rounding)."""
    # coordinates on a 1e-6 grid: boxes of regular anchor grids share coordinates to rounding
    q = torch.round(d["boxes"] * 1e6)
    order = torch.arange(d["labels"].shape[0])
    for key in [q[:, 3], q[:, 2], q[:, 1], q[:, 0], d["labels"]]:
        order = order[key[order].argsort(stable=True)]
    return {k: v[order] for k, v in d.items()}


def _nms_thresh(model) -> float:
    """The IoU threshold of the model's final (per-class) NMS."""
    heads = getattr(model, "roi_heads", None)
    return float(heads.nms_thresh if heads is not None else model.nms_thresh)


def _decided_by_rounding(d, label, thresh) -> float:
    """The score below which a label's detections may differ between two float64 runs that
    round differently: the lower score of any kept pair whose IoU is within 1e-6 of the NMS
    threshold (one run kept both, the other may have suppressed the later one, and what that one
    would have suppressed after it), or -inf."""
    from torchvision.ops import box_iou

    mine = d["labels"] == label
    boxes, scores = d["boxes"][mine], d["scores"][mine]
    close = ((box_iou(boxes, boxes) - thresh).abs() < 1e-6).triu(1)
    i, j = torch.nonzero(close, as_tuple=True)
    return float(torch.minimum(scores[i], scores[j]).max()) if i.numel() else float("-inf")


def _assert_close_detections(got, want, thresh):
    """float64, exact=False: the same detections to rounding, compared in a canonical order.
    Scores and boxes to rounding (1e-9), except where NMS chose between two candidates whose
    scores differ by rounding: with random weights those are near-copies (proposals of two FPN
    levels clipped to the same border give boxes within 1e-7 and scores within 1e-16), and
    either one's box stands for the other (atol 1e-4 on boxes, masks and keypoints).

    A per-class NMS decision can itself be at rounding: an IoU within 1e-9 of the threshold
    (seen: 0.4999999998 in torchvision, 0.5000000008 in ours). NMS decides in score order per
    class, so such a decision changes only that class's detections scoring below the pair's
    later member: those are left out of the comparison (both outputs, that class only)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        assert w["boxes"].shape[0] > 0
        keep_g = torch.ones_like(g["labels"], dtype=torch.bool)
        keep_w = torch.ones_like(w["labels"], dtype=torch.bool)
        for label in torch.unique(torch.cat([g["labels"], w["labels"]])).tolist():
            cut = max(_decided_by_rounding(g, label, thresh), _decided_by_rounding(w, label, thresh))
            keep_g &= (g["labels"] != label) | (g["scores"] > cut + 1e-9)
            keep_w &= (w["labels"] != label) | (w["scores"] > cut + 1e-9)
        g = _canonical({k: v[keep_g] for k, v in g.items()})
        w = _canonical({k: v[keep_w] for k, v in w.items()})
        assert torch.equal(g["labels"], w["labels"])
        torch.testing.assert_close(g["scores"], w["scores"], rtol=1e-9, atol=1e-12)
        for k in w:
            if k not in ("labels", "scores"):
                torch.testing.assert_close(g[k], w[k], rtol=0, atol=1e-4, msg=k)


# ---- exact=True, float32: bitwise --------------------------------------------------------------

# two sizes in one batch: the padded border gives tied scores
_PADDED = [(128, 96), (100, 128)]


@pytest.mark.parametrize("name", _params())
def test_eval_exact_float32(name, seed):
    model = _build(name, seed).eval()
    images = _images(seed, _PADDED, torch.float32)
    want, _ = _run(model, images)
    got, ours = _run(model, images, exact=True)
    _assert_equal_detections(got, want)
    assert ours, "no replacement ran"
    if "rcnn" in name:
        assert ours.get("grid_anchors", 0) == 1
        if "mobilenet" not in name:  # its two maps share one scale: torchvision's loop, one level
            assert ours.get("multiscale_roi_align", 0) >= 1


@pytest.mark.parametrize("name", _params())
def test_train_losses_exact_float32(name, seed):
    kind = MODELS[name][2]
    model = _build(name, seed).train()
    images = _images(seed, _PADDED, torch.float32)
    targets = _targets(seed, images, kind)
    want, _ = _run(model, images, targets, seed)
    got, ours = _run(model, images, copy.deepcopy(targets), seed, exact=True)
    assert list(got) == list(want)
    for k in want:
        assert torch.isfinite(want[k]), k
        assert torch.equal(got[k].detach(), want[k].detach()), (k, got[k], want[k])
    if name != "fcos_resnet50_fpn":  # FCOS matches by centres, not IoU
        assert ours.get("box_iou", 0) >= 1
    if kind == "masks":
        assert ours.get("mask_targets", 0) >= 1


# ---- exact=False, float64: equal to rounding --------------------------------------------------


@pytest.mark.parametrize("name", _params())
def test_eval_fused_float64(name, seed):
    model = _build(name, seed, torch.float64).eval()
    images = _images(seed, [(128, 128)], torch.float64)
    want, _ = _run(model, images)
    got, ours = _run(model, images, exact=False)
    _assert_close_detections(got, want, _nms_thresh(model))
    if "rcnn" in name:
        assert ours.get("rpn_proposals") == 1 and ours.get("detection_postprocess") == 1
    else:
        assert ours.get("batched_nms") == 1
        if name != "fcos_resnet50_fpn":  # FCOS decodes with its own BoxLinearCoder
            assert ours.get("decode_boxes", 0) >= 1
    if MODELS[name][2] == "masks":
        assert ours.get("paste_masks") == 1


# ---- the switch -------------------------------------------------------------------------------


def test_models_built_before_and_after_the_call(seed):
    """A model built before the call and one built after it both take our paths (counted); after
    the undo neither does, and every patched attribute is torchvision's again."""
    from torchvision.models.detection import _utils, anchor_utils, roi_heads, rpn, transform
    from torchvision.ops import boxes as box_ops, poolers

    owners = [(box_ops, "batched_nms"), (box_ops, "box_iou"), (torchvision.ops, "batched_nms"),
              (torchvision.ops, "box_iou"), (poolers, "_multiscale_roi_align"),
              (roi_heads, "project_masks_on_boxes"), (roi_heads, "paste_masks_in_image"),
              (transform, "paste_masks_in_image"), (anchor_utils.AnchorGenerator, "grid_anchors"),
              (_utils.BoxCoder, "decode_single"), (roi_heads.RoIHeads, "postprocess_detections"),
              (rpn.RegionProposalNetwork, "forward")]
    originals = [getattr(o, n) for o, n in owners]
    iou = box_ops.box_iou
    before = _build("fasterrcnn_mobilenet_v3_large_320_fpn", seed).eval()
    assert before.rpn.box_similarity is iou
    images = _images(seed, [(128, 128)], torch.float32)
    for exact in (True, False):
        accelerate.accelerate_torchvision(exact=exact)
        assert accelerate.torchvision_models.patched() is exact
        after = _build("fasterrcnn_mobilenet_v3_large_320_fpn", seed).eval()
        assert before.rpn.box_similarity is box_ops.box_iou is not iou
        assert after.rpn.box_similarity is box_ops.box_iou
        key = "grid_anchors" if exact else "rpn_proposals"  # the fused RPN makes its own anchors
        for m in (before, after):
            n = accelerate.kernel_calls().get(key, 0)
            with torch.no_grad():
                m(images)
            assert accelerate.kernel_calls()[key] == n + 1
    accelerate.restore_torchvision()
    assert accelerate.torchvision_models.patched() is None
    assert [getattr(o, n) for o, n in owners] == originals
    assert before.rpn.box_similarity is iou and after.rpn.box_similarity is iou
    assert "box_similarity" not in vars(rpn.RegionProposalNetwork)
    n = accelerate.kernel_calls().get("grid_anchors", 0)
    with torch.no_grad():
        after(images)
    assert accelerate.kernel_calls().get("grid_anchors", 0) == n


def test_own_box_similarity_is_kept(seed):
    """An instance given its own box_similarity keeps it while accelerated."""
    model = _build("fasterrcnn_mobilenet_v3_large_320_fpn", seed)

    def mine(a, b):
        return torchvision.ops.box_iou(a, b)

    model.rpn.box_similarity = mine
    with accelerate.torchvision_accelerated():
        assert model.rpn.box_similarity is mine
    assert model.rpn.box_similarity is mine


def test_batched_nms_same_as_torchvision_with_ties(seed):
    """Above torchvision's 4000-value switch our batched_nms runs, and returns torchvision's
    indices in torchvision's order, tied scores included; below it, torchvision's coordinate
    trick runs (its nms on our kernel)."""
    for n in (500, 1001, 5000):
        xy = torch.rand(n, 2) * 200
        boxes = torch.cat([xy, xy + 4 + torch.rand(n, 2) * 40], 1)
        scores = torch.randint(0, 6, (n,)).float()  # many ties
        idxs = torch.randint(0, 7, (n,))
        want = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
        calls = accelerate.kernel_calls()
        with accelerate.torchvision_accelerated():
            got = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
        took = accelerate.kernel_calls().get("batched_nms", 0) - calls.get("batched_nms", 0)
        assert took == (1 if n > 1000 else 0)
        assert torch.equal(got, want)


def test_arguments_our_ops_do_not_take_run_torchvisions_code(seed):
    """Other formats, dtypes, a NaN threshold: torchvision's code, its answer."""
    a = torch.rand(6, 4) * 10
    a[:, 2:] += a[:, :2]
    b = a.flip(0)
    with accelerate.torchvision_accelerated():
        calls = accelerate.kernel_calls()
        got = [torchvision.ops.box_iou(a, b, fmt="xywh"), torchvision.ops.box_iou(a.half(), b.half()),
               torchvision.ops.box_iou(a[None], b[None])]
        assert accelerate.kernel_calls().get("box_iou:torchvision", 0) == calls.get("box_iou:torchvision", 0) + 3
    want = [torchvision.ops.box_iou(a, b, fmt="xywh"), torchvision.ops.box_iou(a.half(), b.half()),
            torchvision.ops.box_iou(a[None], b[None])]
    for g, w in zip(got, want):
        assert torch.equal(g, w)
