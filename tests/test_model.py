"""The Mask R-CNN model against torchvision's (the oracle), with the same weights.

Small: ResNet-18 FPN with random weights (the R50 builder only for state_dict checks), images of
200-320 px with min_size 200 / max_size 320, and fewer proposals than the defaults.
box_score_thresh=0 so that random weights still give detections.
"""
import copy
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone as tv_resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from maskrcnn_fast.models import maskrcnn_resnet50_fpn, maskrcnn_resnet_fpn
from maskrcnn_fast.models.transform import ImageTransform
from maskrcnn_fast.ops import paste_masks  # ImageTransform's default paste
from support import CUDA_AVAILABLE, NO_CUDA_REASON
from support.models import SMALL

IMPLS = ["fused", "torch"]
SIZES = {1: [(240, 320)], 3: [(200, 260), (310, 240), (256, 256)]}


def _tv_model(depth=18, **kw):
    if depth == 50:
        return torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kw)
    backbone = tv_resnet_fpn_backbone(
        backbone_name=f"resnet{depth}", weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
    )
    return TVMaskRCNN(backbone, **kw)


@pytest.fixture(scope="module")
def models():
    """torchvision's R18 Mask R-CNN and ours on each impl, all with the same random weights."""
    torch.manual_seed(0)
    tv = _tv_model(18, **SMALL).eval()
    ours = {}
    for impl in IMPLS:
        m = maskrcnn_resnet_fpn(18, ops=impl, **SMALL).eval()
        m.load_state_dict(tv.state_dict())
        ours[impl] = m
    return tv, ours


def _images(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in SIZES[batch]]


def _targets(images, seed=2, empty=()):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, im in enumerate(images):
        h, w = im.shape[-2:]
        k = 0 if i in empty else 3
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 8 + torch.rand(k, 2, generator=g) * torch.tensor([w * 0.4 - 8, h * 0.4 - 8])
        boxes = torch.cat([xy, xy + wh], 1)
        masks = torch.zeros(k, h, w, dtype=torch.uint8)
        for j, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
            masks[j, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] = 1
        labels = torch.randint(1, SMALL["num_classes"], (k,), generator=g)
        out.append({"boxes": boxes, "labels": labels, "masks": masks})
    return out


# ---- state_dict and construction -----------------------------------------------------------------


def test_state_dict_parity_r50():
    torch.manual_seed(0)
    tv = _tv_model(50)
    ours = maskrcnn_resnet50_fpn()
    assert list(ours.state_dict().keys()) == list(tv.state_dict().keys())
    ours.load_state_dict(tv.state_dict(), strict=True)
    tv.load_state_dict(ours.state_dict(), strict=True)
    for (k, a), b in zip(ours.state_dict().items(), tv.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("layers", [0, 3, 5])
def test_frozen_backbone_like_torchvision(layers, tmp_path):
    """With weights, FrozenBatchNorm2d and the same trainable layers as torchvision's builder."""
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    tv = TVMaskRCNN(_resnet_fpn_extractor(resnet, layers), num_classes=91)
    path = tmp_path / "ckpt.pth"
    torch.save(tv.state_dict(), path)
    ours = maskrcnn_resnet50_fpn(weights=str(path), trainable_backbone_layers=layers)
    norms = (nn.BatchNorm2d, FrozenBatchNorm2d)
    kinds = [type(m) for m in ours.modules() if isinstance(m, norms)]
    assert kinds == [type(m) for m in tv.modules() if isinstance(m, norms)]
    assert set(kinds) == {FrozenBatchNorm2d}
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == {
        n for n, p in tv.named_parameters() if p.requires_grad
    }
    for (k, a), b in zip(ours.state_dict().items(), tv.state_dict().values()):
        assert torch.equal(a, b), k


def test_builder_weights_enum(monkeypatch):
    """weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1 (its download replaced by a local
    state_dict): the same model as torchvision's builder gives, eps 0 included."""
    from torchvision.models._api import WeightsEnum
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    sd = TVMaskRCNN(_resnet_fpn_extractor(resnet, 3), num_classes=91).state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: copy.deepcopy(sd))
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1)
    for w in (MaskRCNN_ResNet50_FPN_Weights.COCO_V1, "COCO_V1", "DEFAULT"):
        ours = maskrcnn_resnet50_fpn(weights=w)
        for k, v in tv.state_dict().items():
            assert torch.equal(ours.state_dict()[k], v), k
        assert [m.eps for m in ours.modules() if isinstance(m, FrozenBatchNorm2d)] == [
            m.eps for m in tv.modules() if isinstance(m, FrozenBatchNorm2d)
        ] == [0.0] * 53
        assert [n for n, p in ours.named_parameters() if p.requires_grad] == [
            n for n, p in tv.named_parameters() if p.requires_grad
        ]
    with pytest.raises(ValueError, match="num_classes"):
        maskrcnn_resnet50_fpn(weights="COCO_V1", num_classes=3)


def test_builder_weights_forms(tmp_path):
    torch.manual_seed(0)
    tv = _tv_model(18, num_classes=5)
    sd = tv.state_dict()
    a = maskrcnn_resnet_fpn(18, weights=sd)  # num_classes from the weights
    assert a.roi_heads.box_predictor.cls_score.out_features == 5
    torch.save({"model": sd, "epoch": 3}, tmp_path / "train.pth")  # torchvision's training checkpoint
    b = maskrcnn_resnet_fpn(18, weights=tmp_path / "train.pth", frozen_bn_eps=0.0)
    assert all(m.eps == 0.0 for m in b.modules() if isinstance(m, FrozenBatchNorm2d))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="num_classes"):
        maskrcnn_resnet_fpn(18, weights=sd, num_classes=91)
    with pytest.raises(ValueError, match="weights"):
        maskrcnn_resnet50_fpn(weights="NOT_A_WEIGHT")
    with pytest.raises(TypeError, match="weights"):
        maskrcnn_resnet50_fpn(weights=3)
    with pytest.raises(ValueError, match="depth"):
        maskrcnn_resnet_fpn(20)
    with pytest.raises(ValueError, match="trainable_backbone_layers"):
        maskrcnn_resnet_fpn(18, weights=sd, trainable_backbone_layers=6)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        maskrcnn_resnet_fpn(18, trainable_backbone_layers=2)
    assert any("trainable_backbone_layers" in str(x.message) for x in w)


def test_builder_kwargs():
    kw = dict(
        rpn_pre_nms_top_n_test=11, rpn_post_nms_top_n_test=12, rpn_pre_nms_top_n_train=13,
        rpn_post_nms_top_n_train=14, rpn_nms_thresh=0.6, rpn_fg_iou_thresh=0.8, rpn_bg_iou_thresh=0.2,
        rpn_batch_size_per_image=128, rpn_positive_fraction=0.4, rpn_score_thresh=0.1,
        box_score_thresh=0.2, box_nms_thresh=0.3, box_detections_per_img=7, box_fg_iou_thresh=0.6,
        box_bg_iou_thresh=0.4, box_batch_size_per_image=99, box_positive_fraction=0.3,
        bbox_reg_weights=(1.0, 2.0, 3.0, 4.0), min_size=(300, 320), max_size=500,
        image_mean=(0.1, 0.2, 0.3), image_std=(0.4, 0.5, 0.6),
    )
    m = maskrcnn_resnet_fpn(18, **kw)
    rpn, heads, tr = m.rpn, m.roi_heads, m.transform
    assert rpn._pre_nms_top_n == {"training": 13, "testing": 11}
    assert rpn._post_nms_top_n == {"training": 14, "testing": 12}
    assert (rpn.nms_thresh, rpn.score_thresh) == (0.6, 0.1)
    assert (rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold) == (0.8, 0.2)
    assert (rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction) == (128, 0.4)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.2, 0.3, 7)
    assert (heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold) == (0.6, 0.4)
    assert (heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction) == (99, 0.3)
    assert tuple(heads.box_coder.weights) == (1.0, 2.0, 3.0, 4.0)
    assert (tr.min_size, tr.max_size) == ((300, 320), 500)
    assert tuple(tr.image_mean) == (0.1, 0.2, 0.3) and tuple(tr.image_std) == (0.4, 0.5, 0.6)


def test_builder_fpn_channels_and_own_heads():
    from maskrcnn_fast.models import FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, TwoMLPHead

    m = maskrcnn_resnet_fpn(
        18, fpn_channels=32, min_size=64, max_size=64,
        box_head=TwoMLPHead(32 * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, 3),
        mask_head=MaskRCNNHeads(32, (16, 16), 1), mask_predictor=MaskRCNNPredictor(16, 16, 3),
    )
    assert m.backbone.out_channels == 32
    m.eval()
    with torch.no_grad():
        out = m([torch.rand(3, 64, 64)])
    assert out[0]["masks"].shape[1:] == (1, 64, 64)


def test_legacy_checkpoint_keys():
    """torchvision's COCO_V1 file predates the wrapped convs: rpn.head.conv.weight,
    fpn.inner_blocks.N.weight, mask_head.mask_fcnN.weight (no version metadata)."""
    torch.manual_seed(0)
    tv = _tv_model(18, num_classes=3)
    legacy = {}
    for k, v in tv.state_dict().items():
        k = k.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for blk in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                k = k.replace(f"fpn.{blk}.{i}.0.", f"fpn.{blk}.{i}.")
        for i in range(4):
            k = k.replace(f"mask_head.{i}.0.", f"mask_head.mask_fcn{i + 1}.")
        legacy[k] = v
    ours = maskrcnn_resnet_fpn(18, weights=legacy)
    want = tv.state_dict()
    for k, a in ours.state_dict().items():  # ours has FrozenBatchNorm2d: no num_batches_tracked
        assert torch.equal(a, want[k]), k


# ---- pieces: backbone, transform ------------------------------------------------------------------


def test_backbone_features_equal(models):
    tv, ours = models
    x = torch.rand(2, 3, 224, 320, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = tv.backbone(x), ours["fused"].backbone(x)
    assert list(a.keys()) == list(b.keys()) == ["0", "1", "2", "3", "pool"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)


@pytest.mark.parametrize("training", [False, True])
def test_transform_equal(training):
    kw = dict(min_size=(180, 200, 224) if training else 200, max_size=320,
              image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    tv = torchvision.models.detection.transform.GeneralizedRCNNTransform(**kw).train(training)
    ours = ImageTransform(**kw).train(training)
    images = _images(3)
    targets = _targets(images)
    torch.manual_seed(5)
    a, ta = tv(images, copy.deepcopy(targets))
    torch.manual_seed(5)
    b, tb = ours(images, copy.deepcopy(targets))
    assert a.image_sizes == b.image_sizes
    torch.testing.assert_close(b.tensors, a.tensors, rtol=0, atol=0)
    for x, y in zip(ta, tb):
        # dense masks come out packed where that is smaller (maskrcnn_fast.structures.PackedMasks)
        y = dict(y, masks=y["masks"].to_dense() if hasattr(y["masks"], "to_dense") else y["masks"])
        for k in ("boxes", "labels", "masks"):
            torch.testing.assert_close(y[k], x[k], rtol=0, atol=0)
    # back to the original sizes (boxes; masks need postprocess's paste, tested end to end)
    tv.eval(), ours.eval()
    dets = [{"boxes": t["boxes"]} for t in tb]
    orig = [tuple(im.shape[-2:]) for im in images]
    pa = tv.postprocess(copy.deepcopy(dets), a.image_sizes, orig)
    pb = ours.postprocess(copy.deepcopy(dets), b.image_sizes, orig)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(y["boxes"], x["boxes"], rtol=0, atol=0)


def test_default_paste_is_torchvisions():
    """The model's default paste (ImageTransform's, maskrcnn_fast.ops.paste_masks; the plain
    per-box loop it replaced is gone) is torchvision's up to float32 rounding (it samples every
    pixel directly), including boxes that stick out of the image and boxes under one pixel."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    g = torch.Generator().manual_seed(6)
    masks = torch.rand(6, 1, 28, 28, generator=g)
    boxes = torch.tensor(
        [[10.0, 12.0, 60.0, 40.0], [-15.0, -5.0, 30.0, 20.0], [70.0, 50.0, 110.0, 95.0],
         [5.2, 7.9, 5.6, 8.1], [0.0, 0.0, 90.0, 70.0], [33.3, 21.7, 47.9, 64.4]]
    )
    want = paste_masks_in_image(masks, boxes, (70, 90))
    got = paste_masks(masks, boxes, (70, 90))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert paste_masks(masks[:0], boxes[:0], (70, 90)).shape == (0, 1, 70, 90)


# ---- end to end ----------------------------------------------------------------------------------


def _assert_same_detections(got, want, atol=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["boxes"].shape[0] == w["boxes"].shape[0] > 0
        assert torch.equal(g["labels"], w["labels"])
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=0, atol=atol)
        torch.testing.assert_close(g["scores"], w["scores"], rtol=0, atol=atol)
        assert g["masks"].dtype == torch.float32 and g["masks"].shape == w["masks"].shape
        torch.testing.assert_close(g["masks"], w["masks"], rtol=0, atol=atol)


@pytest.fixture(scope="module")
def tv_detections(models):
    tv, _ = models
    with torch.no_grad():
        return {batch: tv(_images(batch)) for batch in SIZES}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("impl", IMPLS)
def test_eval_matches_torchvision(models, tv_detections, impl, batch):
    _, ours = models
    with torch.no_grad():
        got = ours[impl](_images(batch))
    _assert_same_detections(got, tv_detections[batch])


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_AVAILABLE, reason=NO_CUDA_REASON)
@pytest.mark.parametrize("batch", [1, 3])
def test_eval_matches_torchvision_cuda(models, batch):
    """On the GPU, fp32 without TF32: torchvision's model and ours (fused kernels) agree."""
    tv, ours = models
    tv_c, ours_c = copy.deepcopy(tv).cuda(), copy.deepcopy(ours["fused"]).cuda()
    images = [im.cuda() for im in _images(batch)]
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            want, got = tv_c(images), ours_c(images)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    _assert_same_detections([{k: v.cpu() for k, v in d.items()} for d in got],
                            [{k: v.cpu() for k, v in d.items()} for d in want], atol=1e-3)


def _train_inputs():
    images = _images(3)
    return images, _targets(images, empty=(1,))  # the second image has no objects


@pytest.fixture(scope="module")
def tv_losses():
    torch.manual_seed(0)
    tv = _tv_model(18, **SMALL).train()
    state = copy.deepcopy(tv.state_dict())
    torch.manual_seed(7)
    losses = tv(*_train_inputs())
    return state, {k: v.detach() for k, v in losses.items()}


@pytest.mark.parametrize("impl", IMPLS)
def test_train_losses_match_torchvision(tv_losses, impl):
    """Same weights, same RNG seed, same inputs (one image without objects): the five losses
    agree, and backprop reaches every trainable parameter."""
    state, want = tv_losses
    ours = maskrcnn_resnet_fpn(18, ops=impl, **SMALL).train()
    ours.load_state_dict(state)
    torch.manual_seed(7)
    got = ours(*_train_inputs())
    assert list(got) == ["loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]
    for k in got:
        assert torch.isfinite(got[k]), k
        torch.testing.assert_close(got[k].detach(), want[k], rtol=1e-4, atol=1e-6, msg=k)
    sum(got.values()).backward()
    missing = [n for n, p in ours.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)


def test_train_without_any_object(models):
    _, ours = models
    model = copy.deepcopy(ours["fused"]).train()
    image = torch.rand(3, 160, 200, generator=torch.Generator().manual_seed(4))
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "masks": torch.zeros(0, 160, 200, dtype=torch.uint8)}
    losses = model([image], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0 and losses["loss_box_reg"].item() == 0
    assert losses["loss_rpn_box_reg"].item() == 0 and losses["loss_classifier"].item() > 0


# ---- bad input -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return maskrcnn_resnet_fpn(18, **SMALL)


@pytest.mark.parametrize(
    "images, exc, match",
    [
        (torch.rand(1, 3, 32, 32), TypeError, "images must be a list"),
        ([], ValueError, "images must not be empty"),
        ([torch.rand(3, 32, 32).numpy()], TypeError, r"images\[0\] must be a Tensor"),
        ([torch.rand(32, 32)], ValueError, r"images\[0\] must be Tensor\[3, H, W\]"),
        ([torch.rand(3, 32, 32), torch.rand(1, 32, 32)], ValueError, r"images\[1\] must be Tensor\[3, H, W\]"),
        ([torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)], TypeError, "floating point"),
        ([torch.rand(3, 0, 32)], ValueError, r"images\[0\] is empty"),
        ([torch.rand(3, 32, 32), torch.rand(3, 32, 32, device="meta")], ValueError, r"images\[1\] is on meta"),
    ],
)
def test_bad_images(tiny, images, exc, match):
    tiny.eval()
    with pytest.raises(exc, match=match):
        tiny(images)


def _target(**over):
    t = {"boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0]]), "labels": torch.tensor([1]),
         "masks": torch.zeros(1, 40, 50, dtype=torch.uint8)}
    t.update(over)
    return t


@pytest.mark.parametrize(
    "targets, exc, match",
    [
        (None, ValueError, "targets are required"),
        ([_target(), _target()], ValueError, "list of 1 dicts"),
        ([_target(boxes=torch.rand(1, 5))], ValueError, r"targets\[0\]\['boxes'\] must be Tensor\[K, 4\]"),
        ([_target(boxes=torch.rand(4))], ValueError, r"targets\[0\]\['boxes'\] must be Tensor\[K, 4\]"),
        ([_target(boxes=torch.tensor([[20.0, 3.0, 2.0, 30.0]]))], ValueError, r"\['boxes'\]\[0\].*x2 > x1"),
        ([_target(boxes=torch.tensor([[2.0, 30.0, 20.0, 3.0]]))], ValueError, r"\['boxes'\]\[0\].*y2 > y1"),
        ([_target(boxes=torch.tensor([[2, 3, 20, 30]]))], TypeError, r"\['boxes'\] must be floating"),
        ([_target(labels=torch.tensor([1.0]))], ValueError, r"\['labels'\] must be int64"),
        ([_target(masks=torch.zeros(1, 40, 49, dtype=torch.uint8))], ValueError, r"\['masks'\] must be"),
        ([_target(masks=torch.zeros(2, 40, 50, dtype=torch.uint8))], ValueError, r"\['masks'\] must be"),
        ([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}], ValueError, "lacks 'masks'"),
    ],
)
def test_bad_targets(tiny, targets, exc, match):
    tiny.train()
    with pytest.raises(exc, match=match):
        tiny([torch.rand(3, 40, 50)], targets)


def test_ops_choice(tmp_path):
    """ops picks every op in one place: fused = maskrcnn_fast.ops, torch = its reference."""
    import maskrcnn_fast.ops as mf_ops
    from maskrcnn_fast.ops import reference

    fused = maskrcnn_resnet_fpn(18, ops="fused", num_classes=3)
    assert isinstance(fused.rpn.anchor_generator, mf_ops.AnchorGenerator)
    assert isinstance(fused.roi_heads.box_roi_pool, mf_ops.MultiScaleRoIAlign)
    assert isinstance(fused.roi_heads.mask_roi_pool, mf_ops.MultiScaleRoIAlign)
    assert isinstance(fused.rpn.box_coder, mf_ops.BoxCoder)
    assert fused.rpn.rpn_proposals is mf_ops.rpn_proposals and fused.roi_heads.mask_targets is mf_ops.mask_targets
    assert fused.roi_heads.detection_postprocess is mf_ops.detection_postprocess
    assert fused.transform.paste_masks is mf_ops.paste_masks
    ref = maskrcnn_resnet_fpn(18, ops="torch", num_classes=3)
    assert ref.rpn.rpn_proposals is reference.rpn_proposals and ref.roi_heads.mask_targets is reference.mask_targets
    assert ref.roi_heads.detection_postprocess is reference.detection_postprocess
    assert ref.transform.paste_masks is reference.paste_masks
    torch.save(ref, tmp_path / "model.pt")  # the op set pickles by name
    again = torch.load(tmp_path / "model.pt", weights_only=False)
    assert again.ops is ref.ops


def test_bad_ops_name():
    with pytest.raises(ValueError, match="ops must be one of"):
        maskrcnn_resnet_fpn(18, ops="cuda")
