"""maskrcnn_fast.evaluation: COCO box/mask AP with pycocotools."""
import json

import pytest
import torch

from support import NO_PYCOCOTOOLS_REASON, needs_pycocotools

pytest.importorskip("pycocotools", reason=NO_PYCOCOTOOLS_REASON)
pytestmark = needs_pycocotools  # -m coco selects this file too

from maskrcnn_fast.data import CocoDetection, collate_fn  # noqa: E402
from maskrcnn_fast.evaluation import (  # noqa: E402
    METRICS,
    coco_from_dataset,
    encode_masks,
    evaluate,
    evaluate_predictions,
    format_table,
    metric_names,
    metrics_path,
)
from maskrcnn_fast.models import maskrcnn_resnet_fpn  # noqa: E402
from support.coco import make_coco_folder  # noqa: E402


@pytest.fixture
def coco_ds(tmp_path):
    root, ann, _ = make_coco_folder(tmp_path)
    return CocoDetection(root, ann)


class _ListDataset(torch.utils.data.Dataset):
    """A data set without a COCO object: the ground truth must be built from its targets."""

    def __init__(self, items, classes):
        self.items, self.classes, self.num_classes = items, classes, len(classes)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def get_height_and_width(self, i):
        return tuple(self.items[i][0].shape[-2:])


def _generic(coco_ds):
    return _ListDataset([coco_ds[i] for i in range(len(coco_ds))], ["__background__", "a", "b", "c"])


def _perfect(target, masks=True):
    keep = target["iscrowd"] == 0
    out = {
        "boxes": target["boxes"][keep],
        "labels": target["labels"][keep],
        "scores": torch.ones(int(keep.sum())),
    }
    if masks:
        out["masks"] = target["masks"][keep][:, None].float()
    return out


def _empty(h, w):
    return {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "masks": torch.zeros(0, 1, h, w),
    }


def _check(metrics, value, types=("bbox", "segm")):
    assert sorted(metrics) == sorted(types)
    for t in types:
        assert sorted(metrics[t]) == sorted(METRICS)
        for k in ("AP", "AP50", "AP75", "APs"):
            assert metrics[t][k] == pytest.approx(value), (t, k, metrics[t])


@pytest.mark.parametrize("kind", ["coco", "generic"])
def test_perfect_predictions(coco_ds, kind):
    ds = coco_ds if kind == "coco" else _generic(coco_ds)
    preds = {t["image_id"]: _perfect(t) for _, t in (ds[i] for i in range(len(ds)))}
    m = evaluate_predictions(ds, preds)
    _check(m, 1.0)
    assert m["bbox"]["APl"] == -1.0  # no large objects in the ground truth
    table = format_table(m)
    rows = table.splitlines()
    assert rows[0].split() == ["type", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    # fractions, the unit of --min-mask-ap50; "-" where the ground truth has no object of that size
    assert rows[1].split() == ["bbox", "1.000", "1.000", "1.000", "1.000", "-", "-"]
    assert rows[2].split()[0] == "segm"


def test_boxes_only(coco_ds):
    preds = {t["image_id"]: _perfect(t, masks=False) for _, t in (coco_ds[i] for i in range(3))}
    _check(evaluate_predictions(coco_ds, preds), 1.0, types=("bbox",))


@pytest.mark.parametrize("kind", ["coco", "generic"])
def test_empty_predictions(coco_ds, kind):
    ds = coco_ds if kind == "coco" else _generic(coco_ds)
    preds = {}
    for i in range(len(ds)):
        image, t = ds[i]
        preds[t["image_id"]] = _empty(*image.shape[-2:])
    _check(evaluate_predictions(ds, preds), 0.0)
    _check(evaluate_predictions(ds, {}), 0.0)


def test_wrong_predictions_score_lower(coco_ds):
    preds = {}
    for i in range(3):
        _, t = coco_ds[i]
        p = _perfect(t)
        p["boxes"] = p["boxes"] + 3.0  # shifted: IoU drops below 0.75 on these small objects
        preds[t["image_id"]] = p
    m = evaluate_predictions(coco_ds, preds)
    assert m["bbox"]["AP75"] < 1.0 and m["segm"]["AP"] == pytest.approx(1.0)


def test_subset_scores_its_images(coco_ds):
    sub = torch.utils.data.Subset(coco_ds, [1])
    _, t = coco_ds[1]
    _check(evaluate_predictions(sub, {}), 0.0)
    _check(evaluate_predictions(sub, {t["image_id"]: _perfect(t)}), 1.0)


def test_output_json(coco_ds, tmp_path):
    preds = {t["image_id"]: _perfect(t) for _, t in (coco_ds[i] for i in range(3))}
    out = tmp_path / "dets.json"
    metrics = evaluate_predictions(coco_ds, preds, output_json=str(out))
    dets = json.loads(out.read_text())
    assert len(dets) == 3
    assert {d["category_id"] for d in dets} == {3, 5, 7}  # COCO category ids, not labels
    assert all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(d) for d in dets)
    reread = coco_ds.coco.loadRes(str(out))
    assert len(reread.getAnnIds()) == 3
    assert json.loads(open(metrics_path(out)).read()) == metrics
    assert metrics_path("x/dets.json") == "x/dets.metrics.json"


def test_coco_from_dataset(coco_ds):
    assert coco_from_dataset(coco_ds) is coco_ds.coco
    gt = coco_from_dataset(_generic(coco_ds))
    assert sorted(gt.getImgIds()) == [11, 12, 13]
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == ["a", "b", "c"]
    anns = gt.loadAnns(gt.getAnnIds())
    assert len(anns) == 4 and sum(a["iscrowd"] for a in anns) == 1
    assert min(a["id"] for a in anns) == 1
    _, t = coco_ds[1]
    (a,) = gt.loadAnns(gt.getAnnIds(imgIds=[12]))
    assert torch.equal(torch.from_numpy(gt.annToMask(a)), t["masks"][0])


def test_bad_predictions(coco_ds):
    _, t = coco_ds[0]
    p = _perfect(t)
    p["labels"] = p["labels"] + 10
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_predictions(coco_ds, {11: p})
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_predictions(_generic(coco_ds), {99: _perfect(t)})


class _Oracle(torch.nn.Module):
    """Returns the ground truth of the images it is shown, in order."""

    def __init__(self, ds):
        super().__init__()
        self.outputs = [_perfect(ds[i][1]) for i in range(len(ds))]
        self.calls = 0

    def forward(self, images):
        assert not self.training
        out = self.outputs[self.calls : self.calls + len(images)]
        self.calls += len(images)
        return out


@pytest.mark.parametrize("kind", ["coco", "generic"])
def test_evaluate_oracle(coco_ds, kind, tmp_path, capsys):
    ds = coco_ds if kind == "coco" else _generic(coco_ds)
    model = _Oracle(ds).train()
    m = evaluate(model, ds, batch_size=2, output_json=str(tmp_path / "d.json"), progress=False)
    _check(m, 1.0)
    assert model.training  # mode restored
    assert capsys.readouterr().out == ""  # pycocotools kept quiet
    assert (tmp_path / "d.json").exists() and (tmp_path / "d.metrics.json").exists()


def test_evaluate_tiny_model(coco_ds, capsys):
    """A real (untrained) model end to end; one batch of two images keeps it to ~a second."""
    torch.manual_seed(0)
    model = maskrcnn_resnet_fpn(
        18, num_classes=coco_ds.num_classes, min_size=32, max_size=64, box_score_thresh=0.0,
        rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=10,
    )
    sub = torch.utils.data.Subset(coco_ds, [0, 1])
    loader = torch.utils.data.DataLoader(sub, batch_size=2, collate_fn=collate_fn)
    m = evaluate(model, loader, progress=True, verbose=True)
    assert set(m) == {"bbox", "segm"}
    for t in m:
        assert all(-1.0 <= v <= 1.0 for v in m[t].values())
    captured = capsys.readouterr()
    assert "Average Precision" in captured.out  # verbose shows pycocotools' summary
    assert "2/2" in captured.err  # the progress bar counts images


def test_encode_crops_as_whole_masks(seed):
    g = torch.Generator().manual_seed(seed)
    h, w = 23, 17
    for _ in range(20):
        ch, cw = (int(torch.randint(0, n + 1, (), generator=g)) for n in (h, w))
        y0, x0 = int(torch.randint(0, h - ch + 1, (), generator=g)), int(torch.randint(0, w - cw + 1, (), generator=g))
        crop = torch.rand(ch, cw, generator=g) < torch.rand((), generator=g)
        whole = torch.zeros(h, w, dtype=torch.bool)
        whole[y0 : y0 + ch, x0 : x0 + cw] = crop
        assert encode_masks(crop[None], offset=(y0, x0), size=(h, w)) == encode_masks(whole[None])
    full = torch.ones(1, h, w, dtype=torch.bool)
    assert encode_masks(full, size=(h, w)) == encode_masks(full)
    with pytest.raises(ValueError, match="does not fit"):
        encode_masks(full, offset=(1, 0), size=(h, w))


# ---- COCO's maxDets, masks handed back unpasted, packed ground truth (dense scenes) -------------


def _decoyed(n: int):
    """One 64x64 image with one object, predicted exactly but scored 0.5 behind ``n``
    confident misses (small boxes along the top edge)."""
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 40:56, 40:56] = 1
    target = {"boxes": torch.tensor([[40.0, 40.0, 56.0, 56.0]]), "labels": torch.tensor([1]), "masks": mask,
              "image_id": 1}
    ds = _ListDataset([(torch.zeros(3, 64, 64), target)], ["__background__", "a"])
    boxes = torch.tensor([[4.0 * i, 0.0, 4.0 * i + 3, 3.0] for i in range(n)] + [[40.0, 40.0, 56.0, 56.0]])
    masks = torch.zeros(n + 1, 1, 64, 64)
    for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        masks[i, 0, y1:y2, x1:x2] = 1
    pred = {"boxes": boxes, "labels": torch.ones(n + 1, dtype=torch.int64),
            "scores": torch.tensor([0.9] * n + [0.5]), "masks": masks}
    return ds, {1: pred}


def test_max_dets_reach_cocoeval():
    ds, preds = _decoyed(5)
    default = evaluate_predictions(ds, preds)
    assert evaluate_predictions(ds, preds, max_dets=(1, 10, 100)) == default
    for t in ("bbox", "segm"):
        assert default[t]["AR1"] == 0.0 and default[t]["AR10"] == 1.0
        assert default[t]["AP"] == pytest.approx(1 / 6)  # found at rank 6: precision 1/6
    m = evaluate_predictions(ds, preds, max_dets=[2, 4, 6])
    for t in ("bbox", "segm"):
        assert list(m[t]) == metric_names((2, 4, 6))
        assert (m[t]["AR2"], m[t]["AR4"], m[t]["AR6"]) == (0.0, 0.0, 1.0)
        assert m[t]["AP"] == pytest.approx(1 / 6) and m[t]["AP@2"] == m[t]["AP@4"] == 0.0
    m = evaluate_predictions(ds, preds, max_dets=[2, 5])  # the object is the 6th: never counted
    assert m["segm"]["AP"] == 0.0 and m["segm"]["AR5"] == 0.0
    rows = format_table(m, max_dets=[2, 5]).splitlines()
    assert rows[0] == "AP at maxDets 5 (COCO's maxDets 2 5)"
    assert rows[1].split() == ["type", "AP", "AP50", "AP75", "APs", "APm", "APl", "AP@2"]
    assert format_table(default) == format_table(default, max_dets=(1, 10, 100))


def test_summary_is_pycocotools(coco_ds):
    """Our summary of COCOeval (any maxDets) gives pycocotools' own stats at its maxDets."""
    import io
    from contextlib import redirect_stdout

    from maskrcnn_fast.evaluation import COCOeval, _summary, to_coco_results

    ds = _generic(coco_ds)
    gt = coco_from_dataset(ds)
    results = []
    for i in range(3):
        _, t = ds[i]
        p = _perfect(t)
        p["boxes"] = p["boxes"] + torch.tensor([[3.0, 0.0, 3.0, 1.0]]) * (i + 1)
        p["masks"] = p["masks"].roll(i, -1)
        results += to_coco_results(t["image_id"], p)
    for iou_type in ("bbox", "segm"):
        with redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        got = _summary(ev, (1, 10, 100), False)
        assert {k: got[k] for k in METRICS} == dict(zip(METRICS, ev.stats.tolist()))


@pytest.mark.parametrize("bad", [[6, 2], [0, 5], [5, 5], [], "100", 100, [1.5, 3]])
def test_bad_max_dets(coco_ds, bad):
    ds, preds = _decoyed(1)
    with pytest.raises(ValueError, match="max_dets must be increasing positive integers"):
        evaluate_predictions(ds, preds, max_dets=bad)
    with pytest.raises(ValueError, match="max_dets must be"):
        evaluate(_Oracle(coco_ds), coco_ds, progress=False, max_dets=bad)
    with pytest.raises(ValueError, match="max_dets must be"):
        format_table({}, max_dets=bad)


def test_unpasted_masks_same_results(coco_ds, tmp_path):
    """Predictions with box_masks (paste_masks_in_image=False), pasted into the ground truth's
    image sizes: the results file and metrics of the pasted masks."""
    torch.manual_seed(0)
    model = maskrcnn_resnet_fpn(18, num_classes=coco_ds.num_classes, min_size=32, max_size=64, box_score_thresh=0.0,
                                rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=10).eval()
    pasted, unpasted = {}, {}
    with torch.inference_mode():
        for i in range(len(coco_ds)):
            image, t = coco_ds[i]
            pasted[t["image_id"]] = model([image])[0]
            model.paste_masks_in_image = False
            unpasted[t["image_id"]] = model([image])[0]
            model.paste_masks_in_image = True
    assert all("box_masks" in o and "masks" not in o for o in unpasted.values())
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    got = evaluate_predictions(coco_ds, unpasted, output_json=str(a))
    assert got == evaluate_predictions(coco_ds, pasted, output_json=str(b)) and "segm" in got
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_predictions(coco_ds, {99: unpasted[11]})


def test_packed_ground_truth(seed):
    """Targets with PackedMasks (crops in their boxes) give the ground truth of the dense masks,
    resized ones included (encoded from the crops, never K x H x W)."""
    import torch.nn.functional as F

    from maskrcnn_fast.data import SyntheticShapes
    from maskrcnn_fast.structures import PackedMasks

    kw = dict(image_size=(48, 56), min_shapes=3, max_shapes=12, size_range=(0.05, 0.2), seed=seed)
    dense = coco_from_dataset(SyntheticShapes(3, **kw))
    packed = coco_from_dataset(SyntheticShapes(3, mask_format="packed", **kw))
    assert packed.dataset["annotations"] == dense.dataset["annotations"]
    image, t = SyntheticShapes(1, **kw)[0]
    want = F.interpolate(t["masks"][:, None].float(), size=(61, 37), mode="nearest")[:, 0].byte()
    small = torch.zeros(3, 61, 37)
    items = [(small, dict(t, masks=want, image_id=1)),
             (small, dict(t, masks=PackedMasks.from_dense(t["masks"]).resize(61, 37), image_id=2))]
    gt = coco_from_dataset(_ListDataset(items, ["__background__", "a", "b", "c"]))
    by_image = [[a["segmentation"] for a in gt.loadAnns(gt.getAnnIds(imgIds=[i]))] for i in (1, 2)]
    assert by_image[0] == by_image[1] and len(by_image[0]) == len(t["labels"])
