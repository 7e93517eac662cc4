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
from support.models import EXPORT_SMALL

SIZE = (120, 150)


def small_model():
    torch.manual_seed(0)
    return maskrcnn_resnet_fpn(18, **EXPORT_SMALL).eval()


def images(n, seed, size=SIZE):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=g)


def box_iou(a, b):
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def _grown(box, m=28, padding=1):
    """The integer pixel box torchvision's paste grows a box to (expand_boxes, truncation)."""
    scale = torch.tensor((m + 2 * padding) / m, dtype=torch.float32)
    half = (box[2:] - box[:2]) * 0.5 * scale
    centre = (box[2:] + box[:2]) * 0.5
    return torch.cat([centre - half, centre + half]).to(torch.int64)


def _masks_close(g, w, g_box, w_box, atol):
    """Pasted masks [1, H, W] equal within atol when both boxes grow to the same pixels. A
    grown coordinate within rounding of an integer may truncate to the next pixel (about one
    image in 200 here): the whole mask is then resampled at another scale, and with random
    weights neighbouring mask values differ a lot, so only where it lies is compared."""
    if torch.equal(_grown(g_box), _grown(w_box)):
        torch.testing.assert_close(g, w, atol=atol, rtol=0)
        return
    for mask, box in ((g, g_box), (w, w_box)):
        x1, y1, x2, y2 = _grown(box).tolist()
        outside = mask.clone()
        outside[:, max(y1, 0):y2 + 1, max(x1, 0):x2 + 1] = 0
        assert not outside.any(), "a pasted mask reaches outside its grown box"


def assert_same_detections(got, want, score_atol=1e-4, iou=0.99, mask_atol=1e-3, exact=False):
    """got, want: torchvision's lists of dicts.

    exact: the same tensors (labels, boxes, scores equal; masks within mask_atol). Otherwise
    (another backend's convolutions, which round differently): the same number of detections,
    and each of want's has its own in got with the same label, a box of IoU > ``iou``, a score
    within ``score_atol`` and a pasted mask within ``mask_atol`` (see _masks_close); detections
    whose scores differ by less than the rounding may come in either order, and when the
    detections are cut at box_detections_per_img the last may be another one of equal score."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert w["boxes"].shape[0] > 0
        assert g["boxes"].shape == w["boxes"].shape, (i, g["boxes"].shape, w["boxes"].shape)
        if exact:
            assert torch.equal(g["labels"], w["labels"]), i
            assert torch.equal(g["boxes"], w["boxes"]) and torch.equal(g["scores"], w["scores"]), i
            if "masks" in w and "masks" in g:
                torch.testing.assert_close(g["masks"], w["masks"], atol=mask_atol, rtol=0)
            continue
        ious = box_iou(w["boxes"], g["boxes"])  # [want, got]
        free = torch.ones(len(g["boxes"]), dtype=torch.bool)
        unmatched = []
        for j in range(len(w["boxes"])):
            ok = free & (g["labels"] == w["labels"][j]) & (ious[j] > iou) & \
                ((g["scores"] - w["scores"][j]).abs() <= score_atol)
            if not ok.any():
                unmatched.append(j)
                continue
            k = int(torch.where(ok, (g["scores"] - w["scores"][j]).abs(), float("inf")).argmin())
            free[k] = False
            if "masks" in w and "masks" in g and w["masks"].dim() == 4:
                _masks_close(g["masks"][k], w["masks"][j], g["boxes"][k], w["boxes"][j], mask_atol)
        cut = float(w["scores"].min())
        assert all(float(w["scores"][j]) - cut <= score_atol for j in unmatched), (
            f"image {i}: detections {unmatched} of {w['labels'].tolist()} {w['scores'].tolist()} have no match in "
            f"{g['labels'].tolist()} {g['scores'].tolist()}"
        )


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
