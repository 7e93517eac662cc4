"""Drop-in wherever torchvision's ops and model are used, across ops and for the model:
torch.autocast (the fused ops' dtypes, the model), gradients with respect to the input images,
TorchScript, and torchvision's public signatures. One op's drop-in cases (autocast, quantized
tensors, scripting, box formats) are in that op's file: tests/test_roi_align.py, test_nms.py,
test_box_iou.py, test_multilevel_roi_align.py.

torchvision is the oracle throughout: the same call on torchvision's op or model, under the same
autocast. CUDA variants run through the ``device`` fixture (skipped without a GPU).
"""
import inspect
import math

import pytest
import torch
from torch import Tensor, nn
from torchvision import ops as tvops
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone as tv_resnet_fpn_backbone

import maskrcnn_fast
from maskrcnn_fast import ops
from maskrcnn_fast.models import maskrcnn_resnet_fpn
from support.ops import LOW_DTYPES, autocast, boxes_in_square, distinct_scores, random_rois, ulps


# ==== autocast: the ops ======================================================================


@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_autocast_fused_ops_dtypes(device, seed, dtype):
    """The dtypes torchvision's model has at the same places (see maskrcnn_fast/ops/_autocast.py):
    proposals in float32 on both devices; detections and pasted masks in the network's dtype on
    the CPU and in float32 on CUDA (where autocast runs exp, softmax and interpolate in float32).
    The values are those of test_autocast_eval_matches_torchvision."""
    n, p, c = 2, 30, 5
    logits = torch.randn(n * p, c, device=device).to(dtype)
    regression = (torch.randn(n * p, 4 * c, device=device) * 0.5).to(dtype)
    proposals = boxes_in_square(n * p, 100.0, device).reshape(n, p, 4)  # float32, as rpn_proposals gives
    sizes = torch.tensor([[100, 100], [90, 110]], device=device)
    args = (None, sizes, (10.0, 10.0, 5.0, 5.0), math.log(1000 / 16), 0.05, 0.5, 20)
    with autocast(device, dtype):
        det = ops.detection_postprocess(logits, regression, proposals, *args)
        probs = torch.rand(7, 1, 14, 14, device=device).to(dtype)
        pasted = ops.paste_masks(probs, boxes_in_square(7, 100.0, device), (100, 100))
        decoded = ops.decode_boxes(regression[:, :4], proposals.reshape(-1, 4))
        obj = [torch.randn(n, 3, 8, 8, device=device).to(dtype)]
        deltas = [torch.randn(n, 12, 8, 8, device=device).to(dtype) * 0.1]
        cell = [torch.tensor([[-8.0, -8, 8, 8], [-11, -6, 11, 6], [-6, -11, 6, 11]], device=device)]
        rpn = ops.rpn_proposals(obj, deltas, cell, [(8, 8)], sizes, 100, 50, 0.7)
    out = torch.float32 if device == "cuda" else dtype
    assert det[0].dtype == det[1].dtype == out and det[2].dtype == torch.int64
    assert pasted.dtype == out and decoded.dtype == out
    assert rpn[0].dtype == rpn[1].dtype == torch.float32
    # rpn_proposals runs in float32: the float32 call's results
    rpn32 = ops.rpn_proposals([o.float() for o in obj], [d.float() for d in deltas], cell, [(8, 8)], sizes,
                              100, 50, 0.7)
    for a, b in zip(rpn, rpn32):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_autocast_policy_cuda_kernels_on_cpu_tensors(seed):
    """The CUDA-only float32 kernels, called on CPU tensors: they cast float16 / bfloat16 to
    float32 and return float32 (what the AutocastCUDA registrations run on a GPU)."""
    from maskrcnn_fast.ops import _autocast

    logits = torch.randn(20, 3).bfloat16()
    regression = torch.randn(20, 12).bfloat16()
    proposals = boxes_in_square(20, 100.0).reshape(1, 20, 4)
    sizes = torch.tensor([[100, 100]])
    kernel = _autocast.float32(torch.ops.maskrcnn_fast.detection_postprocess.default)
    out = kernel(logits, regression, proposals, None, sizes, [10.0, 10.0, 5.0, 5.0], 4.0, 0.05, 0.5, 10)
    ref = torch.ops.maskrcnn_fast.detection_postprocess(logits.float(), regression.float(), proposals, None,
                                                         sizes, [10.0, 10.0, 5.0, 5.0], 4.0, 0.05, 0.5, 10)
    for a, b in zip(out, ref):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    roi = _autocast.same_or_float32(torch.ops.maskrcnn_fast.roi_align.default, 0)
    x = torch.randn(1, 3, 8, 8).bfloat16()
    r = torch.tensor([[0.0, 1, 1, 6, 6]])
    got = roi(x, r, 1.0, 2, 2, 2, False)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, torch.ops.maskrcnn_fast.roi_align(x.float(), r, 1.0, 2, 2, 2, False).bfloat16())


# ==== autocast: the model ====================================================================
#
# bfloat16 has 8 significant bits, and torchvision's model under autocast runs its box
# arithmetic in it (on the CPU): its proposals are decoded step by step in bfloat16, where our
# kernels decode in float32 and round once; its NMS shifts boxes by class in bfloat16 first (its
# coordinate trick); and its top-k and sorts leave the order of equal scores to torch.topk,
# which is not index order. With random weights, a model compared as it is would differ from
# torchvision wherever one of those roundings or ties decides. The models below are built so
# that no decision rests on them, and then nothing is left to tolerate:
# - the RPN's and the box head's regression layers are zero, so proposals and detections are
#   the anchors (integers below 256: exact in bfloat16 and float16, whatever the rounding);
# - the RPN keeps every anchor (no top-k cut, NMS threshold 1), so the proposal *set* is
#   torchvision's whatever order ties take; the box head's NMS is off too (threshold 1), and
#   the detections are every (proposal, class) pair (score threshold 0, no top-k cut);
# - detections are compared as sets, in a canonical order (label, then box).
# The NMS ops themselves are compared with torchvision under autocast above. The backbone, the
# heads, ROI align, the class probabilities, the masks and the dtypes are all live.

_SIZES = ((8,), (16,), (32,), (64,), (128,))
_RATIOS = ((1.0,),) * 5
_EXACT = dict(
    min_size=64, max_size=64,
    rpn_pre_nms_top_n_test=2000, rpn_post_nms_top_n_test=2000, rpn_pre_nms_top_n_train=2000,
    rpn_post_nms_top_n_train=2000, rpn_nms_thresh=1.0,
    box_score_thresh=0.0, box_nms_thresh=1.0, box_detections_per_img=700,
    box_batch_size_per_image=100000,  # training: every proposal sampled, whatever their order
)


def _exact_models(device, num_classes=3):
    """torchvision's Mask R-CNN and ours, R18 FPN, the same random weights; narrow heads (box
    head 64 wide, one 16-channel mask convolution: every one of the detections gets a mask in a
    second), one anchor shape (341 anchors per 64 x 64 image), regression layers zero (see
    above)."""
    from torchvision.models.detection import faster_rcnn as tv_frcnn
    from torchvision.models.detection import mask_rcnn as tv_mrcnn
    from torchvision.models.detection import rpn as tv_rpn

    from maskrcnn_fast.models import FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, RPNHead, TwoMLPHead

    tv = TVMaskRCNN(
        tv_resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d,
                               trainable_layers=5),
        rpn_anchor_generator=TVAnchorGenerator(_SIZES, _RATIOS),
        rpn_head=tv_rpn.RPNHead(256, 1),
        box_head=tv_frcnn.TwoMLPHead(256 * 7 * 7, 64),
        box_predictor=tv_frcnn.FastRCNNPredictor(64, num_classes),
        mask_head=tv_mrcnn.MaskRCNNHeads(256, [16], 1),
        mask_predictor=tv_mrcnn.MaskRCNNPredictor(16, 16, num_classes),
        **_EXACT,
    )
    with torch.no_grad():
        for layer in (tv.rpn.head.bbox_pred, tv.roi_heads.box_predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        # Mask logits of a trained model's size: the random initialisation (kaiming, fan-out 1)
        # gives large ones, where the ulp of bfloat16 that optimize_for_inference's folded weights
        # move them by shifts a probability by up to 0.2 (measured)
        tv.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(1 / 32)
    ours = maskrcnn_resnet_fpn(
        18, rpn_anchor_generator=ops.AnchorGenerator(_SIZES, _RATIOS), rpn_head=RPNHead(256, 1),
        box_head=TwoMLPHead(256 * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, num_classes),
        mask_head=MaskRCNNHeads(256, (16,), 1), mask_predictor=MaskRCNNPredictor(16, 16, num_classes),
        **_EXACT,
    )
    ours.load_state_dict(tv.state_dict())
    return tv.to(device), ours.to(device)


def _canonical(det):
    """A detection dict sorted by (label, x1, y1, x2, y2): set comparison (equal keys are the
    same anchor twice, clipped to the same box: the same features, the same everything)."""
    key = torch.cat([det["labels"][:, None].double(), det["boxes"].double()], 1).cpu()
    order = torch.arange(key.shape[0])
    for col in reversed(range(key.shape[1])):
        order = order[key[order, col].sort(stable=True)[1]]
    return {k: v[order.to(v.device)] for k, v in det.items()}


def _images(device, n=2):
    return [torch.rand(3, 64, 64, device=device) for _ in range(n)]


def _variant(model, variant):
    if variant == "optimized":
        return maskrcnn_fast.optimize_for_inference(model)
    if variant == "static_shapes":
        model.static_shapes = True
    return model


# Tolerances, in ulps of the autocast dtype (relative for scores, absolute for the masks'
# probabilities, which are at most 1):
# - scores: the class probabilities of the same logits. Ours are one float32 softmax rounded
#   once; torchvision's are the dtype's softmax (CPU) or torch's float32 one (CUDA), whose exp
#   may differ from ours by an ulp of float32: after the rounding to the dtype, one ulp of it.
# - masks: the same mask logits (same boxes, same features) pasted: torchvision interpolates in
#   the dtype (CPU) or in float32 (CUDA), ours in float32 rounded once: one ulp.
# - optimize_for_inference folds the batch norms into the convolution weights, which autocast
#   then rounds (torchvision rounds the convolution's output instead): every activation after
#   moves by about an ulp; measured on the CPU over 12 seeds: probabilities by up to 2.3 ulps
#   (relative), masks by up to 2; 4 allowed for both.
_ULPS = {"eager": (1, 1), "static_shapes": (1, 1), "optimized": (4, 4)}


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("variant", ["eager", "static_shapes", "optimized"])
def test_autocast_eval_matches_torchvision(device, seed, dtype, variant):
    """Every (proposal, class) pair of two images, ~680 each, with its mask: the same set of
    labels and boxes as torchvision's under the same autocast, bit for bit, the same dtypes,
    and scores and masks within the tolerances above."""
    if device == "cpu" and dtype == torch.float16:
        pytest.skip("CPU autocast: bfloat16 (torchvision's CPU model under float16 is not a target)")
    tv, ours = _exact_models(device)
    tv.eval()
    model = _variant(ours.eval(), variant)
    images = _images(device)
    with torch.no_grad(), autocast(device, dtype):
        want, got = tv(images), model(images)
    score_ulps, mask_ulps = _ULPS[variant]
    for g, w in zip(got, want):
        assert g["boxes"].shape[0] == w["boxes"].shape[0] > 600
        assert {k: v.dtype for k, v in g.items()} == {k: v.dtype for k, v in w.items()}
        g, w = _canonical(g), _canonical(w)
        assert torch.equal(g["labels"], w["labels"])
        assert torch.equal(g["boxes"], w["boxes"])
        torch.testing.assert_close(g["scores"].float(), w["scores"].float(),
                                   rtol=score_ulps * ulps(dtype), atol=0)
        torch.testing.assert_close(g["masks"].float(), w["masks"].float(), rtol=0, atol=mask_ulps * ulps(dtype))


@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_autocast_train_matches_torchvision(device, seed, dtype):
    """Training under autocast: torchvision's five losses from the same weights, inputs and RNG.
    Every proposal is sampled (no order-dependent pick) and the RPN's sampled anchors are
    torchvision's (same labels, same draws), so the losses are the same functions of the same
    values, summed in another order (~1e-6 relative): 1e-3 allowed. Except on the CPU, where
    torchvision's proposals are bfloat16 (decoded in it), so that its RoIHeads rounds the
    ground-truth boxes to bfloat16 and computes the regression targets and the mask targets in
    bfloat16; ours stay float32 (as torchvision's do under CUDA autocast, where exp promotes).
    The box regression loss then differs by torchvision's rounding of its targets, a few ulps
    of bfloat16 each (measured: 6e-4 relative): 2 ulps (1.6e-2) allowed there."""
    if device == "cpu" and dtype == torch.float16:
        pytest.skip("CPU autocast runs bfloat16")
    tv, ours = _exact_models(device)
    tv.train()
    ours.train()
    images, targets = _images(device), _exact_targets(device)
    torch.manual_seed(seed + 1)  # the samplers' draws: the same for both
    with autocast(device, dtype):
        want = tv(images, targets)
    torch.manual_seed(seed + 1)
    with autocast(device, dtype):
        got = ours(images, targets)
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        rtol = 2 * ulps(dtype) if (device == "cpu" and k == "loss_box_reg") else 1e-3
        torch.testing.assert_close(got[k].float(), want[k].float(), rtol=rtol, atol=1e-6, msg=k)
    sum(got.values()).backward()
    missing = [n for n, p in ours.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)


def _exact_targets(device):
    """Two images' targets with integer boxes (exact in every dtype), the second one empty."""
    boxes = torch.tensor([[4.0, 6, 30, 40], [20, 18, 60, 50], [33, 2, 62, 28]])
    masks = torch.zeros(3, 64, 64, dtype=torch.uint8)
    for j, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        masks[j, y1 + 2: y2 - 2, x1 + 2: x2 - 2] = 1
    labels = torch.randint(1, 3, (3,))
    return [
        {"boxes": boxes.to(device), "labels": labels.to(device), "masks": masks.to(device)},
        {"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.int64, device=device),
         "masks": torch.zeros(0, 64, 64, dtype=torch.uint8, device=device)},
    ]


# ==== gradients with respect to the input images =============================================
#
# float64, where our model is torchvision's to ~1e-15: the detections are the same, in the same
# order, so any function of them has the same gradient with respect to the images, through the
# transform (resize, normalisation, the padded batch), the backbone and the heads; in eval mode
# through the fused detection post-processing (scores and boxes) and mask pasting.

_GRAD = dict(
    num_classes=5, min_size=96, max_size=128, box_score_thresh=0.0,
    rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100, box_batch_size_per_image=64, box_detections_per_img=20,
)


def _grad_models(device):
    tv = TVMaskRCNN(
        tv_resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d,
                               trainable_layers=5),
        **_GRAD,
    )
    ours = maskrcnn_resnet_fpn(18, **_GRAD)
    ours.load_state_dict(tv.state_dict())
    return tv.double().to(device), ours.double().to(device)


def _grad_images(device):
    return [torch.rand(3, 96, 128, dtype=torch.float64, device=device),
            torch.rand(3, 120, 90, dtype=torch.float64, device=device)]


def _image_grads(model, images, fn):
    leaves = [im.clone().requires_grad_(True) for im in images]
    out = model(leaves)
    fn(out).backward()
    return out, [im.grad for im in leaves]


@pytest.mark.parametrize("static_shapes", [False, True])
def test_image_gradients_eval_match_torchvision(device, seed, static_shapes):
    tv, ours = _grad_models(device)
    tv.eval()
    ours.eval().static_shapes = static_shapes
    images = _grad_images(device)
    weights = {}

    def saliency(dets):  # a fixed random weighting of every score, box and mask pixel
        total = 0
        for i, d in enumerate(dets):
            for k in ("scores", "boxes", "masks"):
                if (i, k) not in weights:
                    g = torch.Generator().manual_seed(1000 * i + len(k))
                    weights[i, k] = torch.randn(d[k].shape, generator=g, dtype=torch.float64).to(device)
                total = total + (d[k] * weights[i, k]).sum()
        return total

    want, want_g = _image_grads(tv, images, saliency)
    got, got_g = _image_grads(ours, images, saliency)
    for g, w in zip(got, want):
        assert g["boxes"].shape[0] == w["boxes"].shape[0] > 0
        assert torch.equal(g["labels"], w["labels"])
        for k in ("scores", "boxes", "masks"):
            assert g[k].requires_grad
            torch.testing.assert_close(g[k], w[k], rtol=1e-9, atol=1e-9)
    for g, w in zip(got_g, want_g):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9 * w.abs().max().item())


def test_image_gradients_train_match_torchvision(device, seed):
    tv, ours = _grad_models(device)
    tv.train()
    ours.train()
    images = _grad_images(device)
    targets = []
    for im in images:
        h, w = im.shape[-2:]
        boxes = torch.tensor([[5.0, 8, w * 0.6, h * 0.7], [w * 0.3, h * 0.2, w - 4, h - 6]], dtype=torch.float64)
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        for j, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            masks[j, y1 + 1: y2 - 1, x1 + 1: x2 - 1] = 1
        targets.append({"boxes": boxes.to(device), "labels": torch.tensor([1, 3], device=device),
                        "masks": masks.to(device)})
    losses = {}

    def total(name):
        def fn(out):
            losses[name] = {k: v.detach() for k, v in out.items()}
            return sum(out.values())
        return fn

    leaves_tv = [im.clone().requires_grad_(True) for im in images]
    leaves_ours = [im.clone().requires_grad_(True) for im in images]
    torch.manual_seed(seed + 1)
    total("tv")(tv(leaves_tv, targets)).backward()
    torch.manual_seed(seed + 1)
    total("ours")(ours(leaves_ours, targets)).backward()
    for k in losses["tv"]:
        torch.testing.assert_close(losses["ours"][k], losses["tv"][k], rtol=1e-9, atol=1e-12, msg=k)
    for g, w in zip(leaves_ours, leaves_tv):
        assert w.grad.abs().sum() > 0
        torch.testing.assert_close(g.grad, w.grad, rtol=1e-7, atol=1e-9 * w.grad.abs().max().item())


def test_batch_images_in_place_without_gradients(seed):
    """No image requiring grad (or no grad mode): one zero batch written in place, no autograd
    record; with one: the same values, differentiable."""
    from maskrcnn_fast.models.transform import ImageTransform

    t = ImageTransform(64, 96, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    images = [torch.rand(3, 40, 50), torch.rand(3, 33, 61)]
    plain = t.batch_images(images)
    assert plain.grad_fn is None and plain.shape == (2, 3, 64, 64)
    leaves = [im.clone().requires_grad_(True) for im in images]
    with torch.no_grad():
        assert t.batch_images(leaves).grad_fn is None
    diff = t.batch_images(leaves)
    assert torch.equal(diff, plain) and diff.requires_grad
    diff.sum().backward()
    assert all(torch.equal(im.grad, torch.ones_like(im)) for im in leaves)


def test_detection_postprocess_and_paste_masks_gradcheck(seed):
    """The autograd of the fused eval ops: scores and boxes with respect to the logits and the
    regression (the selection held fixed: float64 random inputs, no decision within 1e-6), and
    the pasted masks with respect to the mask probabilities (linear)."""
    n, p, c = 2, 12, 4
    logits = torch.randn(n * p, c, dtype=torch.float64, requires_grad=True)
    regression = (torch.randn(n * p, 4 * c, dtype=torch.float64) * 0.3).requires_grad_(True)
    proposals = boxes_in_square(n * p, 60.0, dtype=torch.float64).reshape(n, p, 4)
    sizes = torch.tensor([[60, 60], [50, 70]])

    def post(cl, br):
        boxes, scores, _, counts, _ = ops.detection_postprocess(
            cl, br, proposals, None, sizes, (10.0, 10.0, 5.0, 5.0), math.log(1000 / 16), 0.05, 0.5, 10)
        valid = torch.arange(10)[None] < counts[:, None]
        return boxes[valid], scores[valid]

    assert torch.autograd.gradcheck(post, (logits, regression))
    masks = torch.rand(5, 1, 7, 7, dtype=torch.float64, requires_grad=True)
    boxes = boxes_in_square(5, 30.0, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m: ops.paste_masks(m, boxes, (30, 34)), (masks,))


# ==== TorchScript ============================================================================


def _scripted_pipeline(features: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor):
    """What a deployment might script around the ops (as torchvision's tests script its ops)."""
    keep = ops.batched_nms(boxes, scores, labels, 0.5)
    iou = ops.box_iou(boxes[keep], boxes)
    overlap = ops.box_iou(boxes[keep], boxes, fmt="xyxy")
    pooled = ops.roi_align(features, [boxes[keep]], 5, 0.25, 2, True)
    single = ops.nms(boxes, scores, 0.7)
    return keep, iou, overlap, pooled, single


def test_script_ops_match_eager_and_torchvision(device, seed):
    x = torch.randn(2, 5, 12, 15, device=device)
    rois = random_rois(20, 2, 12, 15, 0.5, device=device)
    scripted = torch.jit.script(ops.roi_align)
    for size in (5, (3, 4), [2, 3]):
        want = tvops.roi_align(x, rois, size, 0.5, 2, True)
        torch.testing.assert_close(scripted(x, rois, size, 0.5, 2, True), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ops.roi_align(x, rois, size, 0.5, 2, True), want, rtol=1e-5, atol=1e-6)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    assert torch.equal(scripted(x, per_image, 4, 0.5), ops.roi_align(x, per_image, 4, 0.5))
    module = torch.jit.script(ops.RoIAlign((3, 4), 0.5, 2, True))
    assert torch.equal(module(x, rois), ops.roi_align(x, rois, (3, 4), 0.5, 2, True))
    assert torch.equal(module(x, per_image), ops.roi_align(x, per_image, (3, 4), 0.5, 2, True))

    boxes, scores = boxes_in_square(100, device=device), distinct_scores(100, device)
    idxs = torch.randint(0, 3, (100,), device=device)
    assert torch.equal(torch.jit.script(ops.nms)(boxes, scores, 0.5), tvops.nms(boxes, scores, 0.5))
    assert torch.equal(torch.jit.script(ops.batched_nms)(boxes, scores, idxs, 0.5),
                       ops.batched_nms(boxes, scores, idxs, 0.5))
    box_iou = torch.jit.script(ops.box_iou)
    for fmt in ("xyxy", "xywh", "cxcywh"):
        torch.testing.assert_close(box_iou(boxes, boxes[:30], fmt), tvops.box_iou(boxes, boxes[:30], fmt),
                                   rtol=0, atol=0 if device == "cpu" else 1e-6)
    pipeline = torch.jit.script(_scripted_pipeline)
    feats = torch.randn(1, 3, 50, 50, device=device)
    for a, b in zip(pipeline(feats, boxes, scores, idxs), _scripted_pipeline(feats, boxes, scores, idxs)):
        assert torch.equal(a, b)


# ==== signatures =============================================================================


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", ["roi_align", "RoIAlign", "nms", "batched_nms", "box_iou", "MultiScaleRoIAlign"])
def test_op_signatures_match_torchvision(name):
    theirs, ours = getattr(tvops, name), getattr(ops, name)
    if inspect.isclass(theirs):
        assert _params(ours.__init__) == _params(theirs.__init__)
        assert _params(ours.forward) == _params(theirs.forward)
    else:
        assert _params(ours) == _params(theirs)


def test_model_signatures_match_torchvision():
    from torchvision.models import detection as tvdet

    from maskrcnn_fast import models

    theirs = _params(tvdet.maskrcnn_resnet50_fpn)
    ours = dict((n, (k, d)) for n, k, d in _params(models.maskrcnn_resnet50_fpn))
    for n, k, d in theirs:
        assert n in ours and ours[n][0] == k, n
        if n != "weights_backbone":  # docs/dropin.md's table: no download unless asked
            assert ours[n][1] == d, n
    init = dict((n, (k, d)) for n, k, d in _params(models.MaskRCNN.__init__))
    for n, k, d in _params(tvdet.MaskRCNN.__init__):
        if k is inspect.Parameter.VAR_KEYWORD:  # torchvision's transform arguments
            assert "size_divisible" in init and "fixed_size" in init
            continue
        assert n in init and init[n][1] == d, n
    assert _params(models.MaskRCNN.forward) == _params(tvdet.MaskRCNN.forward)
