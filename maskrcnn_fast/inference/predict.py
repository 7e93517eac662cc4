"""Inference on photographs with memory bounded by one image: ``maskrcnn-fast predict``.

The model's default output pastes every detection's mask at full image size at once
(torchvision's masks [D, 1, H, W] float): on a 6000x4000 photo that is 96 MB per detection, 9.6 GB
for 100. Here the score threshold is applied inside the model, before any mask exists at image
size; the model hands back each detection's M x M mask with its box (``paste_masks_in_image``
False), and :func:`~maskrcnn_fast.models.mask_rcnn.mask_crops` pastes them a few at a time (uint8,
at most ``max_paste_bytes``) and cuts each to its extent, which is drawn and encoded: the peak
holds the image, the model's input and activations, and that bounded batch of pasted masks,
however many detections there are. The records are those of the pasted masks, exactly.
"""
import contextlib
import json
import os
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..data.images import read_rgb, rgb_to_tensor, to_uint8
from ..models.mask_rcnn import mask_crops
from .visualize import Canvas, class_colors, detection_record

__all__ = ["predict_image", "write_outputs"]


@contextlib.contextmanager
def _unpasted_masks(model):
    """The model hands back its M x M mask probabilities (``box_masks``) with the boxes already
    in image pixels; the caller pastes them (the model's own paste op, a few at a time)."""
    own = getattr(model, "paste_masks_in_image", None)
    if isinstance(own, bool):
        model.paste_masks_in_image = False
    try:
        yield
    finally:
        if isinstance(own, bool):
            model.paste_masks_in_image = own


@contextlib.contextmanager
def _score_floor(model, score_thresh: float):
    """Raises the box head's score threshold to ``score_thresh`` for the duration, so that
    detections below it are never kept, let alone pasted. The head drops scores <= its
    threshold and we keep scores >= score_thresh: the threshold is set just below it (the
    next float32 down), and never lowered below the model's own."""
    heads = model.roi_heads
    own = heads.score_thresh
    floor = float(np.nextafter(np.float32(score_thresh), np.float32(-np.inf)))
    heads.score_thresh = max(own, floor)
    try:
        yield
    finally:
        heads.score_thresh = own


def predict_image(model, rgb: np.ndarray, device="cpu", score_thresh: float = 0.5,
                  class_names: Optional[Sequence[str]] = None, mask_thresh: float = 0.5,
                  max_paste_bytes: int = 1 << 25):
    """Detections on one picture, drawn and as records, without a D x H x W mask tensor.

    model: a Mask R-CNN in eval mode. rgb: HxWx3 uint8 or uint16 (:func:`read_rgb`).
    max_paste_bytes: the most bytes of pasted (uint8) masks alive at once (one mask at least).
    -> (drawn picture HxWx3 uint8, list of :func:`~maskrcnn_fast.inference.visualize.detection_record`
    in decreasing score: the detections scoring at least ``score_thresh``, masks cut at
    ``mask_thresh``, equal to those of the model's pasted ``masks``).
    """
    h, w = rgb.shape[:2]
    image = rgb_to_tensor(rgb)
    with torch.inference_mode(), _score_floor(model, score_thresh), _unpasted_masks(model):
        det = model([image.to(device)])[0]
        del image
        keep = det["scores"] >= score_thresh
        det = {k: v[keep] for k, v in det.items()}
        boxes, labels, scores = det["boxes"], det["labels"].tolist(), det["scores"].tolist()
        if "box_masks" in det:
            crops = mask_crops(det["box_masks"], boxes, (h, w), mask_thresh, model.transform.paste_masks,
                               max_paste_bytes)
        elif "masks" in det:  # a model that pastes regardless (torchvision's)
            crops = (((m[0] > mask_thresh).cpu(), (0, 0)) for m in det["masks"])
        else:
            crops = None
        canvas = Canvas(to_uint8(rgb))
        n_colors = max([len(class_names) if class_names else 0] + [lab + 1 for lab in labels])
        palette = class_colors(n_colors)
        records = []
        for i, lab in enumerate(labels):
            crop, at = next(crops) if crops is not None else (None, (0, 0))
            if crop is not None:
                canvas.add_mask(crop, palette[lab], offset=at)
            records.append(detection_record(boxes[i].tolist(), lab, scores[i], class_names, crop, at, (h, w)))
        for rec in records:  # labels last: no mask covers one
            canvas.add_box(rec["box"], palette[rec["label"]], f"{rec['label_name']} {rec['score']:.2f}")
    return canvas.array(), records


def write_outputs(picture: np.ndarray, records: List[dict], png: str, js: str, source: str,
                  score_thresh: float) -> None:
    """The drawn picture as PNG, the detections as JSON (the format: docs/cli.md, "Predict")."""
    from PIL import Image

    Image.fromarray(picture).save(png)
    with open(js, "w") as fh:
        json.dump({"image": os.path.abspath(source), "height": int(picture.shape[0]),
                   "width": int(picture.shape[1]), "score_thresh": score_thresh, "detections": records},
                  fh, indent=1)


def read_photo(path: str) -> np.ndarray:
    """A photo as shown: EXIF orientation applied, 16-bit kept (see :func:`read_rgb`)."""
    return read_rgb(path, exif=True)
