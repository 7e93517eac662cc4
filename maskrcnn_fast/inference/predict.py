"""Inference on photographs with memory bounded by one image: ``maskrcnn-fast predict``.

The model pastes every detection's mask at full image size at once (torchvision's output:
masks [D, 1, H, W] float); on a 6000x4000 photo that is 96 MB per detection, 9.6 GB for 100.
Here the score threshold is applied inside the model, before any mask is pasted, and the masks
that remain are pasted one at a time, and drawn and encoded from the rows and columns their box
covers: the peak holds the image, the model's input and activations, and one full-size mask.
"""
import contextlib
import json
import math
import os
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..data.images import read_rgb, rgb_to_tensor, to_uint8
from .visualize import Canvas, class_colors, detection_record

__all__ = ["predict_image", "write_outputs"]


@contextlib.contextmanager
def _unpasted_masks(model):
    """The model hands back its M x M mask probabilities with the boxes already in image pixels;
    the caller pastes them (the same op, one detection at a time)."""
    transform = model.transform
    paste = transform.paste_masks
    transform.paste_masks = lambda masks, boxes, size: masks
    try:
        yield paste
    finally:
        transform.paste_masks = paste


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


def _support(box, m: int, h: int, w: int):
    """(y0, y1, x0, x1): the rows and columns a pasted M x M mask can touch. The paste scales the
    box by (M + 2) / M about its centre (one pixel of padding each side) and truncates to whole
    pixels; two pixels of margin more cover the rounding."""
    if not all(math.isfinite(v) for v in box):
        return 0, h, 0, w
    x1, y1, x2, y2 = box
    sx, sy = (x2 - x1) * 0.5 * (m + 2) / m, (y2 - y1) * 0.5 * (m + 2) / m
    cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    clip = lambda v, hi: min(max(v, 0), hi)  # noqa: E731
    return (clip(math.floor(cy - sy) - 2, h), clip(math.ceil(cy + sy) + 3, h),
            clip(math.floor(cx - sx) - 2, w), clip(math.ceil(cx + sx) + 3, w))


def predict_image(model, rgb: np.ndarray, device="cpu", score_thresh: float = 0.5,
                  class_names: Optional[Sequence[str]] = None, mask_thresh: float = 0.5):
    """Detections on one picture, drawn and as records, with one full-size mask alive at a time.

    model: a Mask R-CNN in eval mode. rgb: HxWx3 uint8 or uint16 (:func:`read_rgb`).
    -> (drawn picture HxWx3 uint8, list of :func:`~maskrcnn_fast.inference.visualize.detection_record`
    in decreasing score: the detections scoring at least ``score_thresh``, masks cut at
    ``mask_thresh``).
    """
    h, w = rgb.shape[:2]
    image = rgb_to_tensor(rgb)
    with torch.inference_mode(), _score_floor(model, score_thresh), _unpasted_masks(model) as paste:
        det = model([image.to(device)])[0]
        del image
        keep = det["scores"] >= score_thresh
        det = {k: v[keep] for k, v in det.items()}
        boxes, labels, scores = det["boxes"], det["labels"].tolist(), det["scores"].tolist()
        masks = det.get("masks")
        canvas = Canvas(to_uint8(rgb))
        n_colors = max([len(class_names) if class_names else 0] + [lab + 1 for lab in labels])
        palette = class_colors(n_colors)
        records = []
        for i, lab in enumerate(labels):
            crop, at = None, (0, 0)
            if masks is not None:
                y0, y1, x0, x1 = _support(boxes[i].tolist(), masks.shape[-1], h, w)
                full = paste(masks[i : i + 1], boxes[i : i + 1], (h, w))
                crop, at = (full[0, 0, y0:y1, x0:x1] > mask_thresh).cpu(), (y0, x0)
                del full
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
