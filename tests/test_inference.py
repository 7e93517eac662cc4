"""optimize_for_inference: batch norms folded into the convolutions give the same detections,
and the model passed in is left untouched.

Small: ResNet-18 FPN, random weights with random batch-norm statistics (so the folding is not
the identity), one 240x320 and one 200x260 image, min_size 200 / max_size 320.
"""
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import maskrcnn_fast
from maskrcnn_fast.inference import fold_batch_norms
from maskrcnn_fast.models import maskrcnn_resnet_fpn
from support.models import SMALL, randomize_batch_norms


def _model(ops, frozen):
    torch.manual_seed(0)
    model = maskrcnn_resnet_fpn(18, ops=ops, **SMALL)
    randomize_batch_norms(model, torch.Generator().manual_seed(0))
    if frozen:  # weights given: the trunk uses FrozenBatchNorm2d, as with pretrained weights
        model = maskrcnn_resnet_fpn(18, ops=ops, weights=model.state_dict(), **SMALL)
    return model.eval()


def _images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 240, 320, generator=g), torch.rand(3, 200, 260, generator=g)]


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ops", ["fused", "torch"])
@pytest.mark.parametrize("frozen", [False, True], ids=["bn", "frozen_bn"])
def test_optimized_matches_original(ops, frozen):
    model = _model(ops, frozen)
    norm = FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    n_bn = sum(isinstance(m, norm) for m in model.modules())
    assert n_bn > 0
    before = _snapshot(model)

    opt = maskrcnn_fast.optimize_for_inference(model)

    assert opt is not model and not opt.training
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in opt.modules())
    assert sum(isinstance(m, norm) for m in model.modules()) == n_bn  # the original keeps its BNs
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k

    images = _images()
    with torch.no_grad():
        ref = model(images)
        out = opt(images)
    for r, o in zip(ref, out):
        assert r["boxes"].shape[0] > 0
        assert torch.equal(r["labels"], o["labels"])
        torch.testing.assert_close(o["boxes"], r["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(o["scores"], r["scores"], atol=1e-4, rtol=0)
        torch.testing.assert_close(o["masks"], r["masks"], atol=1e-3, rtol=0)


def test_channels_last_forced():
    model = _model("fused", frozen=True)
    opt = maskrcnn_fast.optimize_for_inference(model, channels_last=True)
    conv = opt.backbone.body.conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.backbone.body.conv1.weight.is_contiguous()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(opt.backbone(x)["0"], model.backbone(x)["0"], atol=1e-4, rtol=1e-4)


def test_fold_skips_training_bn():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert fold_batch_norms(seq) == 0  # a training-mode BN normalises with batch statistics
    seq.eval()
    randomize_batch_norms(seq, torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 8, 8)
    ref = seq(x)
    assert fold_batch_norms(seq) == 1
    assert isinstance(seq[1], nn.Identity)
    torch.testing.assert_close(seq(x), ref, atol=1e-5, rtol=1e-5)
