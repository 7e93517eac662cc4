"""COCO box and mask AP (pycocotools) for any data set in torchvision's detection format.

A :class:`~maskrcnn_fast.data.CocoDetection` (or a ``Subset`` of one) is scored against its own
JSON with its own category ids; any other data set's targets are turned into a COCO ground truth
(masks as RLE, category id = label). Predictions are torchvision's output dicts: ``boxes``
[D, 4] x1, y1, x2, y2 in the original image's pixels, ``labels`` [D], ``scores`` [D] and,
optionally, ``masks`` [D, 1, H, W] probabilities (binarised at > 0.5, as torchvision's reference
does) or, from a model built with ``paste_masks_in_image=False``, ``box_masks`` [D, 1, M, M]:
the probabilities inside each box, pasted and encoded a few at a time
(:func:`maskrcnn_fast.models.mask_rcnn.mask_crops`) into the same RLEs, so that thousands of
detections per image never need a D x H x W tensor. ``max_dets`` sets COCO's ``maxDets``.
"""
import contextlib
import copy
import io
import json
import operator
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .data.cocoapi import pycocotools
from .models.mask_rcnn import mask_crops

# The most bytes of pasted masks (uint8 planes of one image) alive at once while box_masks
# are encoded (:func:`maskrcnn_fast.models.mask_rcnn.mask_crops`; one plane at least).
PASTE_BYTES = 1 << 25

# Importing this module needs pycocotools: everything here scores or writes COCO data.
_pct = pycocotools("COCO evaluation (maskrcnn_fast.evaluation)")
mask_utils, COCO, COCOeval = _pct.mask, _pct.coco.COCO, _pct.cocoeval.COCOeval

__all__ = [
    "COCO_MAX_DETS",
    "METRICS",
    "check_max_dets",
    "coco_from_dataset",
    "encode_masks",
    "evaluate",
    "evaluate_predictions",
    "format_table",
    "metric_names",
    "to_coco_results",
]

# COCOeval.stats, in order.
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
# COCOeval's params.maxDets (detections per image the AR columns count; AP counts the last).
COCO_MAX_DETS = (1, 10, 100)


def _quiet(verbose: bool):
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _as_int(v) -> int:
    return int(v.item()) if isinstance(v, torch.Tensor) else int(v)


def _coco_source(dataset) -> Optional[Tuple[COCO, List[int], Dict[int, int]]]:
    """(COCO ground truth, image ids in item order, label -> category id) of a data set that
    carries its own COCO object (CocoDetection, through Subsets), else None."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        sub = list(dataset.indices)
        indices = sub if indices is None else [sub[i] for i in indices]
        dataset = dataset.dataset
    coco = getattr(dataset, "coco", None)
    if not isinstance(coco, COCO) or not hasattr(dataset, "ids"):
        return None
    ids = list(dataset.ids)
    if indices is not None:
        ids = [ids[i] for i in indices]
    label_map = dict(getattr(dataset, "label_to_cat_id", {c: c for c in coco.cats}))
    return coco, ids, label_map


def _base(dataset):
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset


def encode_masks(masks: torch.Tensor, offset: Tuple[int, int] = (0, 0), size: Optional[Tuple[int, int]] = None
                 ) -> List[dict]:
    """uint8/bool [K, H, W] -> K compressed RLEs with str counts (JSON-ready).

    With ``size`` (image height, width), the masks are crops whose top-left pixel sits at
    ``offset`` (y, x) in an image of that size, zero elsewhere: the RLEs are of the whole image,
    computed from the crops alone (a 6000x4000 photo's mask is never made for it)."""
    if masks.shape[0] == 0:
        return []
    if size is not None and (tuple(offset) != (0, 0) or tuple(size) != tuple(masks.shape[1:])):
        return [_encode_crop(m, offset, size) for m in masks]
    arr = np.asfortranarray(masks.to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    rles = mask_utils.encode(arr)
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def _encode_target_masks(masks) -> List[dict]:
    """A target's masks -> RLEs: uint8/bool Tensor[K, H, W] (nonzero = inside), or a
    :class:`maskrcnn_fast.structures.PackedMasks` (in its ``out_size`` frame), encoded from each
    instance's crop: never K x H x W."""
    if isinstance(masks, torch.Tensor):
        return encode_masks(masks.detach().cpu() != 0)
    masks = masks.materialize()  # a lazy resize done crop by crop
    size = tuple(int(v) for v in masks.size)
    crops, data = masks.crops.cpu().tolist(), masks.data.cpu()
    return [_encode_crop(data[off : off + cw * ch].reshape(ch, cw) != 0, (y0, x0), size)
            for off, x0, y0, cw, ch in crops]


def _encode_crop(crop: torch.Tensor, offset: Tuple[int, int], size: Tuple[int, int]) -> dict:
    from pycocotools import mask as coco_mask

    (y0, x0), (h, w) = (int(v) for v in offset), (int(v) for v in size)
    ch, cw = crop.shape
    if not (0 <= y0 and y0 + ch <= h and 0 <= x0 and x0 + cw <= w):
        raise ValueError(f"a {ch}x{cw} crop at {(y0, x0)} does not fit in an image of size {(h, w)}")
    # COCO runs go down the columns: the crop's columns padded to full height, in column order
    slab = np.zeros((cw, h), np.uint8)
    slab[:, y0 : y0 + ch] = crop.to(torch.uint8).cpu().numpy().T
    flat = slab.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist() if flat.size else []
    if runs and flat[0]:
        runs.insert(0, 0)  # counts start with a run of zeros
    counts = runs or [0]
    counts[0] += x0 * h  # the columns left of the crop
    after = (w - x0 - cw) * h
    if len(counts) % 2:  # ends in zeros: the columns right of the crop extend that run
        counts[-1] += after
    elif after:
        counts.append(after)
    rle = coco_mask.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


class _GroundTruthBuilder:
    """Accumulates detection-format targets into a COCO ground-truth dict."""

    def __init__(self, classes: Optional[List[str]] = None):
        self.classes = classes
        self.images: List[dict] = []
        self.annotations: List[dict] = []
        self.seen_labels = set()
        self.all_have_masks = True

    def add(self, target: Mapping[str, Any], height: int, width: int) -> int:
        image_id = _as_int(target["image_id"])
        self.images.append({"id": image_id, "height": int(height), "width": int(width)})
        boxes = target["boxes"].detach().cpu().to(torch.float64).reshape(-1, 4)
        labels = target["labels"].detach().cpu().tolist()
        k = len(labels)
        crowd = target["iscrowd"].cpu().tolist() if "iscrowd" in target else [0] * k
        masks = target.get("masks")
        rles = _encode_target_masks(masks) if masks is not None else None
        if masks is None and k:
            self.all_have_masks = False
        if "area" in target:
            areas = target["area"].detach().cpu().tolist()
        elif rles is not None:
            areas = [float(a) for a in mask_utils.area(rles)] if rles else []
        else:
            areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
        for j in range(k):
            x1, y1, x2, y2 = boxes[j].tolist()
            ann = {
                # COCOeval marks matches by annotation id, so ids start at 1 (0 reads as unmatched).
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": int(labels[j]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(areas[j]),
                "iscrowd": int(crowd[j]),
            }
            if rles is not None:
                ann["segmentation"] = rles[j]
            self.annotations.append(ann)
            self.seen_labels.add(int(labels[j]))
        return image_id

    def build(self, verbose: bool = False) -> COCO:
        if self.classes is not None:
            cats = [{"id": i, "name": str(n)} for i, n in enumerate(self.classes) if i > 0]
        else:
            cats = [{"id": c, "name": str(c)} for c in sorted(self.seen_labels)]
        coco = COCO()
        coco.dataset = {"images": self.images, "annotations": self.annotations, "categories": cats}
        with _quiet(verbose):
            coco.createIndex()
        return coco


def _classes_of(dataset) -> Optional[List[str]]:
    base = _base(dataset)
    classes = getattr(base, "classes", None)
    if classes is not None:
        return list(classes)
    n = getattr(base, "num_classes", None)
    return ["__background__"] + [str(i) for i in range(1, n)] if n else None


def coco_from_dataset(dataset, verbose: bool = False) -> COCO:
    """A pycocotools COCO ground truth for ``dataset``.

    A CocoDetection (or a Subset of one) returns its own ``coco``. Any other data set is read
    item by item: one image per item (``image_id`` from the target, size from the image),
    one annotation per instance (box as xywh, ``masks`` as RLE, ``area`` and ``iscrowd`` from the
    target where present), categories ``1..num_classes-1`` named from ``classes`` (else the labels
    seen). Random transforms on the data set would make the ground truth random: evaluate
    without them.
    """
    src = _coco_source(dataset)
    if src is not None:
        return src[0]
    builder = _GroundTruthBuilder(_classes_of(dataset))
    for i in range(len(dataset)):
        image, target = dataset[i]
        builder.add(target, image.shape[-2], image.shape[-1])
    return builder.build(verbose)


def to_coco_results(image_id: int, output: Mapping[str, torch.Tensor], label_to_cat_id=None,
                    image_size: Optional[Sequence[int]] = None, paste_masks: Optional[Callable] = None) -> List[dict]:
    """One image's torchvision output -> COCO result dicts (``image_id``, ``category_id``,
    ``bbox`` xywh, ``score`` and, with masks, ``segmentation`` RLE of masks > 0.5).

    ``box_masks`` (a model with ``paste_masks_in_image=False``) instead of ``masks`` are pasted
    into an image of ``image_size`` (height, width; required then) with ``paste_masks`` (the
    model's op, ``model.transform.paste_masks``; default :func:`maskrcnn_fast.ops.paste_masks`) a
    few at a time and encoded from their crops: the same RLEs as from the pasted ``masks``."""
    image_id = _as_int(image_id)
    boxes = output["boxes"].detach().cpu().to(torch.float64).reshape(-1, 4)
    scores = output["scores"].detach().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    rles = None
    if "masks" in output:
        m = output["masks"].detach()
        if m.dim() == 4:
            m = m[:, 0]
        rles = encode_masks(m > 0.5 if m.is_floating_point() else m != 0)
    elif "box_masks" in output:
        if image_size is None:
            raise ValueError(f"image {image_id}: box_masks are pasted into the image: give image_size (height, width)")
        size = tuple(int(v) for v in image_size)
        crops = mask_crops(output["box_masks"].detach(), output["boxes"].detach(), size, 0.5, paste_masks,
                           PASTE_BYTES)
        rles = [_encode_crop(crop, at, size) for crop, at in crops]
    results = []
    for j, label in enumerate(labels):
        if label_to_cat_id is not None:
            if label not in label_to_cat_id:
                raise ValueError(
                    f"image {image_id}: predicted label {label} has no category (the data set has "
                    f"labels {min(label_to_cat_id)}..{max(label_to_cat_id)}); does the model's "
                    "num_classes match the data set's?"
                )
            cat = label_to_cat_id[label]
        else:
            cat = int(label)
        x1, y1, x2, y2 = boxes[j].tolist()
        r = {"image_id": image_id, "category_id": int(cat), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[j])}
        if rles is not None:
            r["segmentation"] = rles[j]
        results.append(r)
    return results


def _empty_results(coco_gt: COCO, verbose: bool) -> COCO:
    # loadRes() fails on an empty list; an index with no annotations evaluates to AP 0.
    dt = COCO()
    dt.dataset = {"images": list(coco_gt.dataset["images"]), "categories": copy.deepcopy(coco_gt.dataset["categories"]), "annotations": []}
    with _quiet(verbose):
        dt.createIndex()
    return dt


def _valid_polygons(segm) -> bool:
    return not isinstance(segm, list) or any(len(p) >= 6 for p in segm)


def _segm_ground_truth(coco_gt: COCO, verbose: bool) -> COCO:
    """coco_gt, or a copy where annotations whose polygons are empty (pycocotools cannot
    rasterise them, and evaluate() would crash) have an empty mask instead."""
    anns = coco_gt.dataset.get("annotations", [])
    if all(_valid_polygons(a.get("segmentation")) for a in anns):
        return coco_gt
    fixed = []
    for a in anns:
        if not _valid_polygons(a.get("segmentation")):
            img = coco_gt.imgs[a["image_id"]]
            a = dict(a, segmentation=encode_masks(torch.zeros(1, img["height"], img["width"], dtype=torch.uint8))[0])
        fixed.append(a)
    gt = COCO()
    gt.dataset = dict(coco_gt.dataset, annotations=fixed)
    with _quiet(verbose):
        gt.createIndex()
    return gt


def check_max_dets(max_dets) -> Tuple[int, ...]:
    """COCO's maxDets: None -> (1, 10, 100), COCO's; else the increasing positive integers
    given, e.g. (100, 300, 2000) for dense scenes. Raises ValueError naming ``max_dets``."""
    if max_dets is None:
        return COCO_MAX_DETS
    try:
        vals = tuple(operator.index(v) for v in max_dets)
    except TypeError:
        vals = ()
    if not vals or any(v < 1 for v in vals) or any(b <= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"max_dets must be increasing positive integers (COCO's maxDets, e.g. 100 300 2000), "
                         f"got {max_dets!r}")
    return vals


def metric_names(max_dets: Sequence[int] = COCO_MAX_DETS) -> List[str]:
    """The metrics :func:`evaluate` returns for COCO's ``maxDets``: METRICS for COCO's (1, 10,
    100); else AP, AP50, AP75, APs, APm, APl (at the largest maxDets, as COCO counts AP at its
    100), ``AP@<m>`` for each smaller m, ``AR<m>`` for each m, ARs, ARm, ARl (at the largest)."""
    max_dets = tuple(max_dets)
    if max_dets == COCO_MAX_DETS:
        return list(METRICS)
    return (METRICS[:6] + [f"AP@{m}" for m in max_dets[:-1]] + [f"AR{m}" for m in max_dets]
            + ["ARs", "ARm", "ARl"])


def _summary(ev, max_dets: Tuple[int, ...], verbose: bool) -> Dict[str, float]:
    """COCOeval.summarize's means (same selection, same order of summation) for any maxDets;
    pycocotools' own summarize counts AP at 100 detections whatever maxDets holds."""
    p = ev.params
    last = max_dets[-1]

    def mean(ap: bool, iou=None, area="all", m=last) -> float:
        s = ev.eval["precision" if ap else "recall"]  # [T, R, K, A, M] or [T, K, A, M]
        if iou is not None:
            s = s[np.where(iou == p.iouThrs)[0]]
        s = s[..., list(p.areaRngLbl).index(area), list(p.maxDets).index(m)]
        v = s[s > -1]
        value = float(np.mean(v)) if v.size else -1.0
        if verbose:
            title, kind = ("Average Precision", "(AP)") if ap else ("Average Recall", "(AR)")
            span = f"{p.iouThrs[0]:0.2f}:{p.iouThrs[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
            print(f" {title:<18} {kind} @[ IoU={span:<9} | area={area:>6s} | maxDets={m:>3d} ] = {value:0.3f}")
        return value

    out = {"AP": mean(True), "AP50": mean(True, iou=0.5), "AP75": mean(True, iou=0.75)}
    for area, name in (("small", "APs"), ("medium", "APm"), ("large", "APl")):
        out[name] = mean(True, area=area)
    for m in max_dets[:-1]:
        out[f"AP@{m}"] = mean(True, m=m)
    for m in max_dets:
        out[f"AR{m}"] = mean(False, m=m)
    for area, name in (("small", "ARs"), ("medium", "ARm"), ("large", "ARl")):
        out[name] = mean(False, area=area)
    return out


def _cocoeval(coco_gt: COCO, results: List[dict], iou_type: str, img_ids: List[int], verbose: bool,
              max_dets: Tuple[int, ...] = COCO_MAX_DETS) -> Dict[str, float]:
    keep = ("image_id", "category_id", "score", "bbox" if iou_type == "bbox" else "segmentation")
    # loadRes edits its dicts in place (adds area, id, bbox): give it fresh ones.
    dets = [{k: r[k] for k in keep} for r in results]
    if iou_type == "segm":
        coco_gt = _segm_ground_truth(coco_gt, verbose)
    with _quiet(verbose):
        coco_dt = coco_gt.loadRes(dets) if dets else _empty_results(coco_gt, verbose)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.imgIds = sorted(img_ids)
        ev.params.maxDets = list(max_dets)  # evaluate() keeps each image's maxDets[-1] best
        ev.evaluate()
        ev.accumulate()
        if verbose:
            print(f"IoU metric: {iou_type}")
        if max_dets != COCO_MAX_DETS:
            return _summary(ev, max_dets, verbose)
        ev.summarize()
    return {name: float(v) for name, v in zip(METRICS, ev.stats)}


def _score(coco_gt, results, img_ids, with_masks, output_json, verbose,
           max_dets: Tuple[int, ...] = COCO_MAX_DETS) -> Dict[str, Dict[str, float]]:
    unknown = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"predictions for image ids not in the ground truth: {sorted(unknown)[:10]}")
    metrics = {"bbox": _cocoeval(coco_gt, results, "bbox", img_ids, verbose, max_dets)}
    gt_has_masks = all("segmentation" in a for a in coco_gt.dataset.get("annotations", []))
    if with_masks and gt_has_masks:
        metrics["segm"] = _cocoeval(coco_gt, results, "segm", img_ids, verbose, max_dets)
    if output_json is not None:
        _write_json(output_json, results, metrics)
    return metrics


def metrics_path(output_json) -> str:
    """Where the metrics go beside ``output_json``: ``dets.json`` -> ``dets.metrics.json``."""
    root, ext = os.path.splitext(os.fspath(output_json))
    return root + ".metrics" + (ext or ".json")


def _write_json(output_json, results: List[dict], metrics: dict) -> None:
    # The detections file is a plain COCO results list (COCO.loadRes reads it back).
    with open(output_json, "w") as f:
        json.dump(results, f)
    with open(metrics_path(output_json), "w") as f:
        json.dump(metrics, f, indent=2)


def evaluate_predictions(
    dataset,
    predictions: Mapping[int, Mapping[str, torch.Tensor]],
    output_json: Optional[str] = None,
    verbose: bool = False,
    max_dets: Optional[Sequence[int]] = None,
) -> Dict[str, Dict[str, float]]:
    """COCO AP of ``predictions`` ({image_id: torchvision output dict}) on ``dataset``.

    The images scored are the keys of ``predictions`` (all of the data set's when it is empty).
    Returns ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", ..., "ARl"}, "segm":
    {...}}`` (fractions in [0, 1]; -1 where the ground truth has no instance of that size);
    ``segm`` only when the predictions carry masks (``masks``, or ``box_masks`` pasted with
    :func:`maskrcnn_fast.ops.paste_masks` into the ground truth's image size) and the ground
    truth has segmentations. ``output_json``: the detections as a COCO results list, and the
    metrics in :func:`metrics_path` ``(output_json)``. pycocotools' printing shows only with
    ``verbose``. ``max_dets``: COCO's maxDets (default (1, 10, 100); increasing positive
    integers, e.g. (100, 300, 2000) for dense scenes): the metrics are then :func:`metric_names`.
    """
    max_dets = check_max_dets(max_dets)
    src = _coco_source(dataset)
    if src is not None:
        coco_gt, ids, label_map = src
    else:
        coco_gt, label_map = coco_from_dataset(dataset, verbose), None
        ids = coco_gt.getImgIds()
    results: List[dict] = []
    with_masks = True
    for image_id, output in predictions.items():
        with_masks &= "masks" in output or "box_masks" in output
        size = None
        if "box_masks" in output and "masks" not in output:
            img = coco_gt.imgs.get(_as_int(image_id))
            if img is None:
                raise ValueError(f"predictions for image ids not in the ground truth: [{_as_int(image_id)}]")
            size = (img["height"], img["width"])
        results.extend(to_coco_results(image_id, output, label_map, image_size=size))
    img_ids = [_as_int(i) for i in predictions] if len(predictions) else ids
    return _score(coco_gt, results, img_ids, with_masks, output_json, verbose, max_dets)


def _total_images(loader) -> Optional[int]:
    try:
        return len(loader.sampler) if loader.batch_size is not None else len(loader.dataset)
    except TypeError:
        return None


def evaluate(
    model: torch.nn.Module,
    data: Iterable,
    device="cpu",
    batch_size: int = 2,
    output_json: Optional[str] = None,
    progress: bool = True,
    verbose: bool = False,
    num_workers: int = 0,
    max_dets: Optional[Sequence[int]] = None,
) -> Dict[str, Dict[str, float]]:
    """Runs ``model`` in eval mode over ``data`` (a data set, or a DataLoader yielding (list of
    images, list of targets) as :func:`maskrcnn_fast.data.collate_fn` makes) and returns
    :func:`evaluate_predictions`' metrics for the images it saw.

    ``batch_size`` and ``num_workers`` apply when ``data`` is a data set. The ground truth of a
    data set without its own COCO object is built from the targets as they pass (no second
    read). Detections go to RLE batch by batch; a model with a ``paste_masks_in_image``
    attribute (:class:`maskrcnn_fast.models.MaskRCNN`) runs with it False, and its masks are
    pasted and encoded a few at a time with its own paste op (the same RLEs), so no D x H x W
    tensor is made even for thousands of detections per image. The model's train/eval mode
    (and that attribute) are restored afterwards. ``max_dets``: as in :func:`evaluate_predictions`
    (the model keeps at most its ``box_detections_per_img`` detections per image: raise it to
    the largest).
    """
    from torch.utils.data import DataLoader

    from .data.samplers import collate_fn

    if isinstance(data, DataLoader):
        loader = data
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_fn)
    max_dets = check_max_dets(max_dets)
    dataset = loader.dataset
    src = _coco_source(dataset)
    builder = None if src is not None else _GroundTruthBuilder(_classes_of(dataset))
    label_map = src[2] if src is not None else None

    results: List[dict] = []
    seen: List[int] = []
    with_masks = True
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=_total_images(loader), unit="img", desc="evaluate")
    was_training = model.training
    pasting = getattr(model, "paste_masks_in_image", None)
    paste_op = getattr(getattr(model, "transform", None), "paste_masks", None)
    model.eval()
    if isinstance(pasting, bool):
        model.paste_masks_in_image = False
    try:
        with torch.inference_mode():
            for images, targets in loader:
                outputs = model([img.to(device, non_blocking=True) for img in images])
                for img, tgt, out in zip(images, targets, outputs):
                    image_id = _as_int(tgt["image_id"])
                    if builder is not None:
                        builder.add(tgt, img.shape[-2], img.shape[-1])
                    with_masks &= "masks" in out or "box_masks" in out
                    results.extend(to_coco_results(image_id, out, label_map, image_size=img.shape[-2:],
                                                   paste_masks=paste_op))
                    seen.append(image_id)
                if bar is not None:
                    bar.update(len(images))
    finally:
        model.train(was_training)
        if isinstance(pasting, bool):
            model.paste_masks_in_image = pasting
        if bar is not None:
            bar.close()
    coco_gt = src[0] if src is not None else builder.build(verbose)
    return _score(coco_gt, results, seen, with_masks, output_json, verbose, max_dets)


def format_table(results: Mapping[str, Mapping[str, float]], metrics: Optional[Sequence[str]] = None,
                 max_dets: Optional[Sequence[int]] = None) -> str:
    """The COCO AP table, in [0, 1] as pycocotools prints it and --min-mask-ap50 takes it (three
    decimals; "-" where the ground truth has no instance of that size)::

        type      AP    AP50    AP75     APs     APm     APl
        bbox   0.379   0.588   0.411   0.215   0.412   0.496
        segm   0.346   0.556   0.369   0.159   0.374   0.508

    With ``max_dets`` other than COCO's (1, 10, 100), a first line says at how many detections
    per image AP is counted, and the AP at each smaller maxDets follows (``AP@100``, ...).
    """
    max_dets = check_max_dets(max_dets)
    lines = []
    if metrics is None:
        metrics = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        if max_dets != COCO_MAX_DETS:
            metrics += tuple(f"AP@{m}" for m in max_dets[:-1])
            lines.append(f"AP at maxDets {max_dets[-1]} (COCO's maxDets {' '.join(str(m) for m in max_dets)})")
    lines.append("type " + "".join(f"{m:>8}" for m in metrics))
    for iou_type, vals in results.items():
        cells = []
        for m in metrics:
            v = vals.get(m)
            cells.append(f"{'-':>8}" if v is None or v < 0 else f"{v:>8.3f}")
        lines.append(f"{iou_type:<5}" + "".join(cells))
    return "\n".join(lines)
