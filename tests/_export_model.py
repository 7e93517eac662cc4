"""The small seeded model, images and comparisons shared by the deployment tests (export,
.pt2 package, C++ example, ONNX), and the .pt2 package compiled once per test session.

ResNet-18 FPN with random weights (seed 0), 5 classes, inputs of 120x150 resized to 128x160,
box_score_thresh=0 so that random weights still give detections.
"""
import functools
import os
import tempfile

import torch

from maskrcnn_fast.models import maskrcnn_resnet_fpn

SIZE = (120, 150)
SMALL = dict(
    num_classes=5,
    min_size=128,
    max_size=160,
    box_score_thresh=0.0,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=100,
    box_detections_per_img=20,
)


def small_model():
    torch.manual_seed(0)
    return maskrcnn_resnet_fpn(18, **SMALL).eval()


def images(n, seed, size=SIZE):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=g)


def box_iou(a, b):
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def assert_same_detections(got, want, score_atol=1e-4, iou=0.99, mask_atol=1e-3, exact=False):
    """got, want: torchvision's lists of dicts. Same labels in the same order, boxes of IoU >
    ``iou`` (equal with exact), scores within score_atol, pasted masks within mask_atol."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g["boxes"].shape == w["boxes"].shape, (i, g["boxes"].shape, w["boxes"].shape)
        assert w["boxes"].shape[0] > 0
        assert torch.equal(g["labels"], w["labels"]), i
        if exact:
            assert torch.equal(g["boxes"], w["boxes"]) and torch.equal(g["scores"], w["scores"])
        else:
            assert (box_iou(g["boxes"], w["boxes"]).diagonal() > iou).all(), i
            torch.testing.assert_close(g["scores"], w["scores"], atol=score_atol, rtol=0)
        if "masks" in w and "masks" in g:
            assert g["masks"].shape == w["masks"].shape
            torch.testing.assert_close(g["masks"], w["masks"], atol=mask_atol, rtol=0)


@functools.lru_cache(maxsize=None)
def compiled_package():
    """(eager model, path of its .pt2 package): compiled once per session (about a minute on
    2 cores), in a temporary folder removed at exit."""
    from maskrcnn_fast.deploy import compile_package, export

    model = small_model()
    program = export(model, images(2, seed=0))
    folder = tempfile.mkdtemp(prefix="mf_pt2_")
    path = compile_package(program, os.path.join(folder, "small.pt2"))
    import atexit
    import shutil

    atexit.register(shutil.rmtree, folder, True)
    return model, path
