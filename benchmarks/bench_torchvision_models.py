"""Every torchvision detection model with and without ``maskrcnn_fast.accelerate_torchvision()``.

Group ``torchvision_models.<model>[infer]``: eval, no_grad, batch 1, one random image at the
model's default size (R-CNN / RetinaNet / FCOS: 800 x 1088, which their transform keeps; the
MobileNet 320 model and SSDlite: 320 x 320; SSD300: 300 x 300). ``torchvision`` is the model as
it is, ``fused`` the same model object after ``accelerate_torchvision()`` (exact mode: answers
bit for bit torchvision's), ``rounding`` after ``accelerate_torchvision(exact=False)`` (adds the
fused ops that round differently: RPN proposals, box-head postprocess, decode, paste).
Group ``torchvision_models.<model>[train]``: one training iteration (forward, losses, backward,
SGD step) on the same image with 3 boxes (masks / keypoints where the model has them; two
copies for SSD300 and SSDlite, whose extra layers' batch norms need more than one value),
``torchvision`` against ``fused``. Random weights (``weights=None``, torchvision's
initialisation, seed 0): the R-CNN models' box heads pass about three classes per proposal over
box_score_thresh with these weights (benchmarks/bench_model.py), so postprocess and paste work
as with trained weights; the single-stage models' score thresholds are lowered to 0.01 so that
their postprocess sees candidates too.

One forward takes seconds on a CPU: 1 warm-up + ROUNDS timed rounds per benchmark; the impls of
a model run back to back, under the same machine load. ``MF_BENCH_MODELS`` (comma-separated
names) restricts the models.
"""
import contextlib
import os

import pytest
import torch
from torchvision.models import detection as D

from common import _sync
from maskrcnn_fast import accelerate

ROUNDS = int(os.environ.get("MF_BENCH_ROUNDS", 3))
TRAIN_ROUNDS = int(os.environ.get("MF_BENCH_TRAIN_ROUNDS", 2))
_LOW = dict(score_thresh=0.01)
# name -> (builder, keyword arguments, image (h, w), kind)
MODELS = {
    "fasterrcnn_resnet50_fpn": (D.fasterrcnn_resnet50_fpn, {}, (800, 1088), "boxes"),
    "fasterrcnn_resnet50_fpn_v2": (D.fasterrcnn_resnet50_fpn_v2, {}, (800, 1088), "boxes"),
    "fasterrcnn_mobilenet_v3_large_fpn": (D.fasterrcnn_mobilenet_v3_large_fpn, {}, (800, 1088), "boxes"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (D.fasterrcnn_mobilenet_v3_large_320_fpn, {}, (320, 320), "boxes"),
    "maskrcnn_resnet50_fpn": (D.maskrcnn_resnet50_fpn, {}, (800, 1088), "masks"),
    "maskrcnn_resnet50_fpn_v2": (D.maskrcnn_resnet50_fpn_v2, {}, (800, 1088), "masks"),
    "keypointrcnn_resnet50_fpn": (D.keypointrcnn_resnet50_fpn, {}, (800, 1088), "keypoints"),
    "retinanet_resnet50_fpn": (D.retinanet_resnet50_fpn, _LOW, (800, 1088), "boxes"),
    "retinanet_resnet50_fpn_v2": (D.retinanet_resnet50_fpn_v2, _LOW, (800, 1088), "boxes"),
    "fcos_resnet50_fpn": (D.fcos_resnet50_fpn, _LOW, (800, 1088), "boxes"),
    "ssd300_vgg16": (D.ssd300_vgg16, _LOW, (300, 300), "boxes"),
    "ssdlite320_mobilenet_v3_large": (D.ssdlite320_mobilenet_v3_large, _LOW, (320, 320), "boxes"),
}
_ONLY = [n for n in os.environ.get("MF_BENCH_MODELS", "").split(",") if n]
NAMES = [n for n in MODELS if not _ONLY or n in _ONLY]


def _kernels(impl):
    if impl == "torchvision":
        assert not accelerate.is_accelerated()
        return contextlib.nullcontext()
    return accelerate.torchvision_accelerated(exact=impl == "fused")


def _model(name, device):
    builder, kw, _, _ = MODELS[name]
    torch.manual_seed(0)
    return builder(weights=None, weights_backbone=None, **kw).to(device)


def _image(name, device, n=1):
    h, w = MODELS[name][2]
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, h, w, generator=g).to(device) for _ in range(n)]


def _targets(name, images):
    kind = MODELS[name][3]
    h, w = images[0].shape[-2:]
    rel = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.6], [0.2, 0.6, 0.6, 0.95]])
    boxes = rel * torch.tensor([w, h, w, h])
    t = {"boxes": boxes, "labels": torch.tensor([1, 1 if kind == "keypoints" else 2, 1])}
    if kind == "masks":
        m = torch.zeros(3, h, w, dtype=torch.uint8)
        for j, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            m[j, y1 + 4: y2 - 4, x1 + 4: x2 - 4] = 1
        t["masks"] = m
    if kind == "keypoints":
        u = torch.rand(3, 17, 2, generator=torch.Generator().manual_seed(2))
        t["keypoints"] = torch.cat([boxes[:, None, :2] + u * (boxes[:, None, 2:] - boxes[:, None, :2]),
                                    torch.ones(3, 17, 1)], 2)
    return [{k: v.to(images[0].device) for k, v in t.items()} for _ in images]


@pytest.fixture(scope="module")
def models():
    return {}


def _get(models, name, device):
    if name not in models:
        models.clear()  # one model in memory at a time
        models[name] = _model(name, device)
    return models[name]


@pytest.mark.parametrize("impl", ["torchvision", "fused", "rounding"])
@pytest.mark.parametrize("name", NAMES)
def bench_torchvision_models_infer(benchmark, device, models, name, impl):
    model = _get(models, name, device).eval()
    images = _image(name, device)

    def fn():
        with torch.no_grad():
            out = model(images)
        _sync(device)
        return out

    benchmark.group = f"torchvision_models.{name}[infer]"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = str(device)
    with _kernels(impl):
        out = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["detections_per_image"] = [int(o["boxes"].shape[0]) for o in out]


@pytest.mark.parametrize("impl", ["torchvision", "fused"])
@pytest.mark.parametrize("name", NAMES)
def bench_torchvision_models_train(benchmark, device, models, name, impl):
    model = _get(models, name, device).train()
    # SSD's extra layers have trainable batch norms, whose 1x1 maps need two images
    images = _image(name, device, 2 if name.startswith("ssd") else 1)
    targets = _targets(name, images)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def fn():
        losses = model(images, targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
        _sync(device)
        return losses

    benchmark.group = f"torchvision_models.{name}[train]"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = str(device)
    try:
        with _kernels(impl):
            benchmark.pedantic(fn, rounds=TRAIN_ROUNDS, iterations=1, warmup_rounds=1)
    finally:
        model.load_state_dict(state)  # the next impl starts from the same weights
