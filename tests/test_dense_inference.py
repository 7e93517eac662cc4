"""Inference and evaluation at the density of cells and aerial scenes (issue 18, item 4):
thousands of detections per image end to end, the masks handed back unpasted
(``paste_masks_in_image=False``: ``box_masks`` [D, 1, M, M] with their boxes) and pasted a few at
a time (``mask_crops``), so that predict and eval never hold D x H x W; their outputs are those
of the pasted path, bit for bit; eval's ``--max-dets`` and ``--detections-per-img``.

The dense scene: SyntheticShapes with 500-1000 shapes of 0.5-1.5% of the side, a small
ResNet-18 FPN (narrow heads) with random weights, every score kept (``box_score_thresh=0``),
3000 detections per image (from 3000 proposals x 3 classes: about twice as many candidates
survive the per-class NMS as are kept).
"""
import json
import os

import numpy as np
import pytest
import torch

from support import needs_pycocotools
from support.cli import cli_fails

from maskrcnn_fast import cli, ops
from maskrcnn_fast.data import SyntheticShapes
from maskrcnn_fast.data.images import rgb_to_tensor
from maskrcnn_fast.models.builders import build_model
from maskrcnn_fast.models.mask_rcnn import mask_crops
from maskrcnn_fast.ops import reference

pytestmark = pytest.mark.usefixtures("one_thread")

D = 3000
IMAGE = (240, 280)  # resized to 192 x 224 by the model: boxes go back through the resize
DENSE = dict(min_size=192, max_size=224, fpn_channels=32, box_head_width=64, mask_head_width=16,
             anchor_sizes=(8, 16, 32, 64, 128), rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=D,
             rpn_nms_thresh=0.7, box_score_thresh=0.0, box_nms_thresh=0.7, box_detections_per_img=D)


def dense_model(seed: int, **kw):
    torch.manual_seed(seed)
    return build_model({"depth": 18, "num_classes": 4, "kwargs": {**DENSE, **kw}}).eval()


def dense_rgb(seed: int, size=IMAGE) -> np.ndarray:
    """A dense synthetic scene as an 8-bit photo (HxWx3), what predict reads."""
    image, target = SyntheticShapes(1, image_size=size, min_shapes=500, max_shapes=1000,
                                    size_range=(0.005, 0.015), seed=seed)[0]
    assert len(target["labels"]) >= 500
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def dense():
    """One dense scene through one model, pasted and unpasted (the forward takes seconds: done
    once for the module). Its seed is fresh each run like the ``seed`` fixture's (MF_SEED
    replays it) and printed by each test that uses it."""
    s = int(os.environ.get("MF_SEED", int.from_bytes(os.urandom(4), "little")))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = dense_model(s)
        rgb = dense_rgb(s)
        image = rgb_to_tensor(rgb)
        with torch.inference_mode():
            pasted = model([image])[0]
            model.paste_masks_in_image = False
            unpasted = model([image])[0]
            model.paste_masks_in_image = True
    finally:
        torch.set_num_threads(n)
    return dict(seed=s, model=model, rgb=rgb, image=image, pasted=pasted, unpasted=unpasted)


# ---- the model ---------------------------------------------------------------------------------


def test_thousands_of_detections_unpasted(dense):
    """3000 detections per image end to end; unpasted, the same detections with their M x M
    masks, which the model's paste turns into its pasted masks exactly."""
    print(f"seed={dense['seed']}")
    pasted, unpasted = dense["pasted"], dense["unpasted"]
    assert pasted["boxes"].shape == (D, 4) and pasted["masks"].shape == (D, 1, *IMAGE)
    assert set(unpasted) == {"boxes", "labels", "scores", "box_masks"}
    assert unpasted["box_masks"].shape == (D, 1, 28, 28) and unpasted["box_masks"].dtype == torch.float32
    for k in ("boxes", "labels", "scores"):
        assert torch.equal(unpasted[k], pasted[k])
    assert (pasted["boxes"][:, 2:] > IMAGE[1] * 0.75).any()  # boxes in the original image's pixels
    assert dense["model"].paste_masks_in_image  # the attribute, set back
    repasted = dense["model"].transform.paste_masks(unpasted["box_masks"], unpasted["boxes"], IMAGE)
    assert torch.equal(repasted, pasted["masks"])
    some = slice(0, D, 15)  # the model's mask_crops: its own paste op
    got = list(dense["model"].mask_crops(unpasted["box_masks"][some], unpasted["boxes"][some], IMAGE))
    want = list(mask_crops(unpasted["box_masks"][some], unpasted["boxes"][some], IMAGE, 0.5,
                           dense["model"].transform.paste_masks))
    assert len(got) == len(want) == 200
    assert all(torch.equal(a, b) and at == bt for (a, at), (b, bt) in zip(got, want))


def _torchvision_twin(model):
    """torchvision's MaskRCNN with the dense model's architecture, options and weights."""
    import torchvision
    from torch import nn
    from torchvision.models.detection import MaskRCNN as TVMaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead

    c = DENSE["fpn_channels"]
    trunk = torchvision.models.resnet18(norm_layer=nn.BatchNorm2d)
    backbone = BackboneWithFPN(trunk, {f"layer{i + 1}": str(i) for i in range(4)}, [64, 128, 256, 512], c)
    anchors = AnchorGenerator(tuple((s,) for s in DENSE["anchor_sizes"]), ((0.5, 1.0, 2.0),) * 5)
    widths = ("fpn_channels", "box_head_width", "mask_head_width", "anchor_sizes")
    tv = TVMaskRCNN(backbone, None, rpn_anchor_generator=anchors, rpn_head=RPNHead(c, 3),
                    box_head=TwoMLPHead(c * 49, 64), box_predictor=FastRCNNPredictor(64, 4),
                    mask_head=MaskRCNNHeads(c, [16] * 4, 1), mask_predictor=MaskRCNNPredictor(16, 16, 4),
                    **{k: v for k, v in DENSE.items() if k not in widths})
    tv.load_state_dict(model.state_dict(), strict=True)
    return tv.eval()


def test_thousands_of_detections_are_torchvisions(dense):
    """torchvision's model with the same weights and options keeps the same 3000 detections
    (label and box) with the same scores and masks (within 1e-4, as tests/test_model.py). The
    probabilities differ from torch.softmax's by an ulp or two, so among thousands the order of
    near-equal scores may differ, and so may the last kept where one ties with the first left
    out: detections are matched by label and box, and the unmatched must score as the last."""
    print(f"seed={dense['seed']}")
    with torch.inference_mode():
        want = _torchvision_twin(dense["model"])([dense["image"]])[0]
    got = dense["pasted"]
    assert want["boxes"].shape == (D, 4)
    dist = torch.cdist(got["boxes"].double(), want["boxes"].double(), p=float("inf"))
    dist[got["labels"][:, None] != want["labels"][None, :]] = float("inf")
    near, j = dist.min(1)
    matched = near < 1e-3
    assert j[matched].unique().numel() == int(matched.sum())  # one to one
    last = float(got["scores"][-1])
    for scores, keep in ((got["scores"], ~matched), (want["scores"], ~torch.isin(torch.arange(D), j[matched]))):
        assert torch.all((scores[keep] - last).abs() < 1e-6), scores[keep]
    i = torch.nonzero(matched).flatten()
    torch.testing.assert_close(got["scores"][i], want["scores"][j[i]], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["boxes"][i], want["boxes"][j[i]], rtol=0, atol=1e-4)
    for part in i.split(200):
        torch.testing.assert_close(got["masks"][part], want["masks"][j[part]], rtol=0, atol=1e-4)


def test_static_shapes_unpasted(dense):
    """The static-shape path (torch.compile, CUDA graphs) hands back box_masks too."""
    print(f"seed={dense['seed']}")
    model = dense["model"]
    model.static_shapes, model.paste_masks_in_image = True, False
    try:
        with torch.inference_mode():
            padded_out = model([dense["image"]])[0]
    finally:
        model.static_shapes, model.paste_masks_in_image = False, True
    want = dense["unpasted"]
    assert set(padded_out) == set(want)
    for k in ("boxes", "labels", "scores"):
        assert torch.equal(padded_out[k], want[k])
    torch.testing.assert_close(padded_out["box_masks"], want["box_masks"], rtol=0, atol=1e-6)


def test_builder_keyword_and_device(seed, device):
    """``paste_masks_in_image`` is a builder keyword; on each device the unpasted masks paste
    into the pasted ones exactly, and mask_crops gives their pixels."""
    model = dense_model(seed, paste_masks_in_image=False, rpn_post_nms_top_n_test=1000,
                        box_detections_per_img=1500).to(device)
    assert model.paste_masks_in_image is False
    image = rgb_to_tensor(dense_rgb(seed, (120, 140))).to(device)
    with torch.inference_mode():
        out = model([image])[0]
        model.paste_masks_in_image = True
        full = model([image])[0]
    assert "masks" not in out and out["box_masks"].shape == (1500, 1, 28, 28)
    for k in ("boxes", "labels", "scores"):
        assert torch.equal(out[k], full[k])
    paste = model.transform.paste_masks
    assert torch.equal(paste(out["box_masks"], out["boxes"], (120, 140)), full["masks"])
    _assert_crops_are_pasted(out["box_masks"], out["boxes"], (120, 140), 0.5, paste, 1 << 16)


def test_targets_may_be_packed():
    """The model's input check takes the compact masks (PackedMasks of the image's shape) and
    names the target whose masks have another shape."""
    from maskrcnn_fast.structures import PackedMasks

    model = dense_model(0).train()
    masks = torch.zeros(2, 40, 48, dtype=torch.uint8)
    masks[0, 5:15, 5:20] = masks[1, 20:30, 30:44] = 1
    target = {"boxes": torch.tensor([[5.0, 5.0, 20.0, 15.0], [30.0, 20.0, 44.0, 30.0]]),
              "labels": torch.tensor([1, 2]), "masks": PackedMasks.from_dense(masks)}
    losses = model([torch.rand(3, 40, 48)], [target])
    assert set(losses) >= {"loss_mask"} and torch.isfinite(losses["loss_mask"])
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\] must be Tensor\[K, H, W\] = \[2, 40, 48\]"):
        model([torch.rand(3, 40, 48)], [dict(target, masks=PackedMasks.from_dense(masks[:, :30]))])
    with pytest.raises(TypeError, match="must be a Tensor or a PackedMasks, got list"):
        model([torch.rand(3, 40, 48)], [dict(target, masks=[masks])])


# ---- mask_crops: the pasted pixels, a few planes at a time -----------------------------------


def _assert_crops_are_pasted(masks, boxes, size, threshold, paste, max_bytes):
    want = (paste(masks, boxes, size) > threshold)[:, 0].cpu()
    calls = []

    def spy(m, b, s, threshold=None):
        calls.append(m.shape[0])
        out = paste(m, b, s, threshold=threshold)
        assert out.dtype == torch.uint8  # thresholded in the op: no float plane
        return out

    got = list(mask_crops(masks, boxes, size, threshold, spy, max_bytes))
    assert len(got) == masks.shape[0]
    per = max(1, max_bytes // (size[0] * size[1]))
    assert max(calls, default=0) <= per and sum(calls) == masks.shape[0]
    for i, (crop, (y0, x0)) in enumerate(got):
        assert crop.dtype == torch.bool and crop.device.type == "cpu"
        if crop.numel() == 0:
            assert not want[i].any() and (y0, x0) == (0, 0)
            continue
        # tight: a pixel on each edge; the whole mask: the image outside the crop is empty
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
        whole = torch.zeros(size, dtype=torch.bool)
        whole[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        assert torch.equal(whole, want[i]), i


@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_mask_crops_are_the_pasted_masks(seed, device, impl):
    g = torch.Generator().manual_seed(seed)
    h, w, n = 37, 53, 40
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - torch.tensor([w * 0.1, h * 0.1])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0] = torch.tensor([-30.0, -20.0, -5.0, -2.0])  # outside the image: empty
    boxes[1] = torch.tensor([3.2, 4.1, 3.4, 4.3])  # under a pixel
    boxes[2] = torch.tensor([0.0, 0.0, float(w), float(h)])  # the whole image
    masks = torch.rand(n, 1, 28, 28, generator=g)
    masks[3] = 0.0  # empty
    masks[4] = 1.0
    paste = ops.paste_masks if impl == "fused" else reference.paste_masks
    masks, boxes = masks.to(device), boxes.to(device)
    for threshold in (0.5, 0.0, 0.9):
        for max_bytes in (1, 3 * h * w + 5, 1 << 25):
            _assert_crops_are_pasted(masks, boxes, (h, w), threshold, paste, max_bytes)
    assert list(mask_crops(masks[:0], boxes[:0], (h, w))) == []
    three = list(mask_crops(masks[:3, 0], boxes[:3], (h, w)))  # [D, M, M] too
    assert len(three) == 3 and three[0][0].shape == (0, 0)


def test_mask_crops_bad_arguments():
    m, b = torch.rand(2, 1, 28, 28), torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 2)
    for kwargs, match in [
        (dict(box_masks=torch.rand(2, 2, 28, 28)), "box_masks must be Tensor"),
        (dict(boxes=b[:1]), r"boxes must be Tensor\[2, 4\]"),
        (dict(threshold=-0.1), "threshold must be >= 0"),
        (dict(max_bytes=0), "max_bytes must be >= 1"),
    ]:
        args = {**dict(box_masks=m, boxes=b, image_size=(9, 9)), **kwargs}
        with pytest.raises(ValueError, match=match):
            list(mask_crops(**args))


# ---- evaluation and predict: the same RLEs as the pasted path ----------------------------------


@needs_pycocotools
def test_coco_results_same_rles(dense, monkeypatch):
    """to_coco_results of the unpasted masks (pasted three planes at a time, encoded from
    their crops) is that of the pasted masks: the same RLEs, for all 3000 detections."""
    import maskrcnn_fast.evaluation as evaluation

    print(f"seed={dense['seed']}")
    monkeypatch.setattr(evaluation, "PASTE_BYTES", 3 * IMAGE[0] * IMAGE[1])
    want = evaluation.to_coco_results(7, dense["pasted"])
    with pytest.raises(ValueError, match="image_size"):
        evaluation.to_coco_results(7, dense["unpasted"])
    got = evaluation.to_coco_results(7, dense["unpasted"], image_size=IMAGE,
                                     paste_masks=dense["model"].transform.paste_masks)
    assert len(want) == D and got == want


@needs_pycocotools
def test_predict_dense_same_records_and_picture(dense):
    """predict at 3000 detections: the records and the drawing of the pasted masks."""
    from maskrcnn_fast.inference.predict import predict_image
    from maskrcnn_fast.inference.visualize import Canvas, class_colors, detections_to_records

    print(f"seed={dense['seed']}")
    picture, records = predict_image(dense["model"], dense["rgb"], score_thresh=0.0, max_paste_bytes=1 << 20)
    want = detections_to_records(dense["pasted"])
    assert len(records) == D and records == want
    canvas = Canvas(dense["rgb"])
    palette = class_colors(4)
    for m, lab in zip(dense["pasted"]["masks"], dense["pasted"]["labels"].tolist()):
        canvas.add_mask(m[0] > 0.5, palette[lab])
    for rec in want:
        canvas.add_box(rec["box"], palette[rec["label"]], f"{rec['label_name']} {rec['score']:.2f}")
    assert np.array_equal(picture, canvas.array())


class _Pasting(torch.nn.Module):
    """The model behind a wrapper without ``paste_masks_in_image``: evaluate() gets its pasted
    masks (the path the streaming one must equal)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)


@needs_pycocotools
def test_evaluate_streams_same_results(seed, tmp_path, monkeypatch):
    """evaluate() on a MaskRCNN runs it unpasted and pastes a few masks at a time: the same COCO
    results file and metrics as from its pasted masks; maxDets reach COCOeval."""
    import maskrcnn_fast.evaluation as evaluation

    ds = SyntheticShapes(2, image_size=(120, 140), min_shapes=30, max_shapes=60, size_range=(0.01, 0.03),
                         seed=seed)
    model = dense_model(seed, box_detections_per_img=400, rpn_post_nms_top_n_test=400)
    monkeypatch.setattr(evaluation, "PASTE_BYTES", 5 * 120 * 140)
    calls = []
    paste = model.transform.paste_masks
    model.transform.paste_masks = lambda m, b, s, threshold=None: calls.append(m.shape[0]) or paste(
        m, b, s, threshold=threshold)
    max_dets = (10, 100, 400)
    a, b = tmp_path / "stream.json", tmp_path / "pasted.json"
    got = evaluation.evaluate(model, ds, output_json=str(a), progress=False, max_dets=max_dets)
    assert calls and max(calls) == 5 and model.paste_masks_in_image  # a few at a time; restored
    model.transform.paste_masks = paste
    want = evaluation.evaluate(_Pasting(model), ds, output_json=str(b), progress=False, max_dets=max_dets)
    results = json.loads(a.read_text())
    assert len(results) == 800 and results == json.loads(b.read_text())
    assert got == want
    assert list(got["segm"]) == evaluation.metric_names(max_dets)
    assert {"AP", "AP@10", "AP@100", "AR10", "AR100", "AR400"} <= set(got["bbox"])


# ---- the command line --------------------------------------------------------------------------


def test_cli_options_checked_first(capsys):
    cli_fails(capsys, ["eval", "--checkpoint", "x.pt", "--max-dets", "0", "10"], "--max-dets must be >= 1, got 0")
    cli_fails(capsys, ["eval", "--checkpoint", "x.pt", "--max-dets", "100", "10"],
              "--max-dets must be increasing (COCO's maxDets, e.g. 100 300 2000), got 100 10")
    cli_fails(capsys, ["eval", "--checkpoint", "x.pt", "--max-dets", "10", "10"], "--max-dets must be increasing")
    cli_fails(capsys, ["eval", "--checkpoint", "x.pt", "--detections-per-img", "0"],
              "--detections-per-img must be >= 1, got 0")
    cli_fails(capsys, ["predict", "x.png", "--checkpoint", "x.pt", "--detections-per-img", "-3"],
              "--detections-per-img must be >= 1, got -3")


@needs_pycocotools
def test_cli_eval_max_dets(tmp_path, capsys, tiny_checkpoint):
    """--max-dets reaches COCOeval and the table; --detections-per-img the model; without it a
    note says the model keeps fewer than the largest maxDets counts."""
    js = tmp_path / "eval.json"
    base = ["eval", "--checkpoint", tiny_checkpoint, "--dataset", "synthetic", "--num-images", "2",
            "--device", "cpu", "--no-progress", "--output-json", str(js), "--model-arg", "box_score_thresh=0"]
    rc = cli.main(base + ["--max-dets", "5", "10", "40", "--detections-per-img", "40"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "AP at maxDets 40 (COCO's maxDets 5 10 40)" in captured.out
    header = [line for line in captured.out.splitlines() if line.startswith("type")][0]
    assert header.split() == ["type", "AP", "AP50", "AP75", "APs", "APm", "APl", "AP@5", "AP@10"]
    assert "note" not in captured.err
    results = json.loads(js.read_text())
    per_image = np.bincount([r["image_id"] for r in results])
    assert per_image.max() > 20  # the tiny checkpoint keeps 20: --detections-per-img raised it
    metrics = json.loads((tmp_path / "eval.metrics.json").read_text())
    assert {"AR5", "AR10", "AR40", "AP@5", "AP@10"} <= set(metrics["segm"])
    rc = cli.main(base + ["--max-dets", "10", "100"])
    captured = capsys.readouterr()
    assert rc == 0 and "note: the model keeps 20 detections per image, fewer than --max-dets 100" in captured.err



@needs_pycocotools
def test_cli_predict_detections_per_img(tmp_path, capsys, tiny_checkpoint):
    """--detections-per-img raises the model's 20 (the tiny checkpoint's) for predict too."""
    from PIL import Image

    Image.fromarray(dense_rgb(0, (64, 64))).save(tmp_path / "dense.png")
    out = tmp_path / "out"
    rc = cli.main(["predict", str(tmp_path / "dense.png"), "--checkpoint", tiny_checkpoint, "--output-dir", str(out),
                   "--score-thresh", "0", "--device", "cpu", "--detections-per-img", "45",
                   "--model-arg", "box_score_thresh=0"])
    assert rc == 0, capsys.readouterr().err
    assert len(json.loads((out / "dense.json").read_text())["detections"]) == 45


def test_mask_head_in_chunks_same_masks(dense, monkeypatch):
    """Thousands of detections go through the mask head MASK_HEAD_ROWS at a time (its upsampled
    features are 0.8 MB per detection): the same masks as one pass, images without detections
    and chunk tails included. Each row's result is its own, but the convolution library picks
    its algorithm by batch size (oneDNN here: 40 rows at once vs 6 at a time differ by 5e-7
    with these narrow heads), so the probabilities agree to float32 rounding of the logits
    (their scale here is ~1: 1e-5 is ~100 ulps), not bit for bit."""
    print(f"seed={dense['seed']}")
    model, image = dense["model"], dense["image"]
    heads = model.roi_heads
    assert D > heads.MASK_HEAD_ROWS  # the fixture's masks came in chunks
    monkeypatch.setattr(type(heads), "MASK_HEAD_ROWS", 10**9)
    model.paste_masks_in_image = False
    try:
        with torch.inference_mode():
            whole = model([image])[0]
    finally:
        model.paste_masks_in_image = True
    torch.testing.assert_close(whole["box_masks"], dense["unpasted"]["box_masks"], rtol=0, atol=1e-5)

    g = torch.Generator().manual_seed(dense["seed"])
    with torch.inference_mode():
        images, _ = model.transform([image, image, image])
        features = model.backbone(images.tensors)
        h, w = images.image_sizes[0]
        xy = torch.rand(40, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        boxes = torch.cat([xy, xy + 4 + torch.rand(40, 2, generator=g) * 30], 1)
        labels = torch.randint(1, 4, (40,), generator=g)
        per_image = ([boxes, boxes[:0], boxes[:13]], [labels, labels[:0], labels[:13]])
        one_pass = heads.mask_inference(features, *per_image, images.image_sizes)
        monkeypatch.setattr(type(heads), "MASK_HEAD_ROWS", 6)
        chunked = heads.mask_inference(features, *per_image, images.image_sizes)
    assert [t.shape[0] for t in chunked] == [40, 0, 13]
    for a, b in zip(one_pass, chunked):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
