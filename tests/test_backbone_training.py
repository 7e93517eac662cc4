"""The training fast path of the backbone: frozen batch norms folded into the convolutions."""
import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from maskrcnn_fast.models.backbone import resnet_fpn_backbone
from support.models import randomize_batch_norms


@pytest.mark.parametrize("depth,layers", [(18, 3), (50, 5)])
def test_folded_frozen_bn_matches_modules(depth, layers):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    bb = resnet_fpn_backbone(depth, norm_layer=FrozenBatchNorm2d, trainable_layers=layers, out_channels=32)
    randomize_batch_norms(bb, g)
    # float64: the folded and the unfolded products round differently, and float32 rounding
    # grows through 50 layers
    bb = bb.double()
    x = torch.rand(2, 3, 64, 96, generator=g, dtype=torch.float64)

    def run(fold):
        bb.body.fold_frozen_bn = fold
        bb.zero_grad(set_to_none=True)
        out = bb(x)
        sum((o * (i + 1)).sum() for i, o in enumerate(out.values())).backward()
        grads = {n: p.grad.clone() for n, p in bb.named_parameters() if p.requires_grad}
        return {k: v.detach() for k, v in out.items()}, grads

    ref_out, ref_grads = run(False)
    out, grads = run(True)
    for k in ref_out:
        torch.testing.assert_close(out[k], ref_out[k], rtol=1e-9, atol=1e-9)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-8, atol=1e-8)


def test_trainable_batch_norm_is_not_folded():
    """BatchNorm2d in training mode normalises with batch statistics: nothing to fold."""
    torch.manual_seed(0)
    bb = resnet_fpn_backbone(18, trainable_layers=5, out_channels=16).train()
    ref = torchvision.models.resnet18()
    ref.load_state_dict(bb.body.state_dict(), strict=False)
    x = torch.rand(2, 3, 64, 64)
    feats = bb.body(x)
    y = ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))
    torch.testing.assert_close(feats["0"], y)
