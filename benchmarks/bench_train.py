"""One Mask R-CNN R50-FPN training iteration: forward with targets, the five losses, backward;
batch 2 at 800x1088 (min_size 800, max_size 1333: no resize).

The configuration is torchvision's reference recipe for training on a backbone initialised from
ImageNet weights (what `train.py` of torchvision's detection references does by default):
FrozenBatchNorm2d in the trunk and its last 3 layers trainable. Random weights stand in for the
download; every impl runs the same state_dict. ``fused`` and ``torch`` are maskrcnn_fast's model
on our kernels / our pure-PyTorch ops, ``torchvision`` is torchvision's MaskRCNN on the same
backbone configuration. The images and targets are two SyntheticShapes images (4-8 objects
each, exact masks). The samplers draw the same anchors and proposals for every impl (seeded
before each iteration). ``extra_info`` records images/s and the losses.

Our model runs as the builder makes it: in training its frozen batch norms are folded into the
convolutions, whose memory format the backbone chooses by timing both on this machine
(``backbone.channels_last`` None, the default; measured in the untimed warm-up round). Groups:
``train[bs2]`` as built (the automatic choice, recorded in ``extra_info['layout']``), and
``train_nchw[bs2]`` / ``train_channels_last[bs2]`` with our layout fixed, each beside
torchvision's iteration again, so that every ratio is measured under the same load and the table
shows which format this machine prefers.

CUDA only: the same iteration under fp32 and autocast fp16 (``train_cuda[...]``).
"""
import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from common import IMPLS, _sync
from maskrcnn_fast.data import SyntheticShapes
from maskrcnn_fast.models import maskrcnn_resnet50_fpn

H, W = 800, 1088
BS = 2
# One iteration takes ~10 s on a 2-core CPU: a fixed 1 warm-up + 3 timed rounds
ROUNDS = 3


def _torchvision_model():
    trunk = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    return torchvision.models.detection.MaskRCNN(_resnet_fpn_extractor(trunk, 3), num_classes=91)


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return _torchvision_model().state_dict()


@pytest.fixture(scope="module")
def batch():
    data = SyntheticShapes(BS, image_size=(H, W), min_shapes=4, max_shapes=8, seed=3)
    images, targets = zip(*(data[i] for i in range(BS)))
    return list(images), [{k: v for k, v in t.items() if k in ("boxes", "labels", "masks")} for t in targets]


def _model(impl, state, device):
    if impl == "torchvision":
        model = _torchvision_model()
    else:
        # a trunk state_dict makes the builder take the pretrained-backbone configuration
        model = maskrcnn_resnet50_fpn(ops=impl, weights_backbone={
            k[len("backbone.body."):]: v for k, v in state.items() if k.startswith("backbone.body.")
        } | {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    model.load_state_dict(state)
    return model.train().to(device)


def _iteration(model, images, targets, device, amp=False):
    def fn():
        torch.manual_seed(0)  # the same sampled anchors and proposals every round
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            losses = model(images, targets)
        sum(losses.values()).backward()
        _sync(device)
        return {k: float(v.detach()) for k, v in losses.items()}

    return fn


def record_layout(benchmark, model):
    """extra_info['layout']: the format our backbone ran in (its setting or automatic choice)
    and, when it timed both, the times on the first image of the input (report.py prints them)."""
    backbone = getattr(model, "backbone", None)
    if not hasattr(backbone, "channels_last_setting"):
        return
    chosen = backbone.channels_last
    benchmark.extra_info["layout"] = {
        "setting": backbone.channels_last_setting,
        "chosen": None if chosen is None else ("channels_last" if chosen else "nchw"),
        "timed_s": [list(t) for t in backbone.layout_timings.values()],
    }


# group name suffix -> backbone.channels_last; "" is the model as built
LAYOUTS = {"": None, "_nchw": False, "_channels_last": True}


# impl varies fastest: the impls of a group run back to back, under the same machine load
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=["auto", "nchw", "channels_last"])
def bench_train(benchmark, device, state, batch, impl, layout):
    if str(device).startswith("cuda"):
        pytest.skip("the CUDA iteration is bench_train_cuda")
    if layout and impl == "torch":
        pytest.skip("layouts are compared on the fused model")
    images, targets = batch
    model = _model(impl, state, device)
    if impl != "torchvision":
        model.backbone.channels_last = LAYOUTS[layout]
    benchmark.group = f"train{layout}[bs{BS}]"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = str(device)
    losses = benchmark.pedantic(_iteration(model, images, targets, device), rounds=ROUNDS, iterations=1,
                                warmup_rounds=1)
    benchmark.extra_info["losses"] = losses
    benchmark.extra_info["images_per_s"] = BS / benchmark.stats.stats.median
    record_layout(benchmark, model)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("amp", [False, True])
def bench_train_cuda(benchmark, device, state, batch, impl, amp):
    if not str(device).startswith("cuda"):
        pytest.skip("CUDA benchmark")
    images, targets = batch
    images = [i.cuda() for i in images]
    targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
    model = _model(impl, state, "cuda")
    benchmark.group = f"train_cuda[{'amp' if amp else 'fp32'},bs{BS}]"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = "cuda"
    benchmark.pedantic(_iteration(model, images, targets, "cuda", amp), rounds=5, iterations=1, warmup_rounds=2)
    benchmark.extra_info["images_per_s"] = BS / benchmark.stats.stats.median
