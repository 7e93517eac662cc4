"""Drawing detections on images, and detections as JSON-ready records.

Masks are blended one at a time inside their own extent, so drawing on a 6000x4000 photo
needs one full-size mask at a time, never all of them. Labels sit on a box of their class
colour, in black or white (whichever reads better on it), at a size that follows the image.
"""
import colorsys
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Canvas", "class_colors", "detection_record", "detections_to_records", "draw_detections",
           "select_detections"]


def class_colors(num_classes: int) -> List[tuple]:
    """One saturated RGB colour per class, hues spread by the golden ratio (neighbours differ)."""
    out = []
    for c in range(max(num_classes, 1)):
        h = (c * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _label_name(label: int, class_names: Optional[Sequence[str]]) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def select_detections(det: Dict[str, Tensor], score_thresh: float) -> Dict[str, Tensor]:
    """The detections whose score is at least ``score_thresh`` (same keys)."""
    keep = det["scores"] >= score_thresh
    return {k: v[keep] for k, v in det.items() if torch.is_tensor(v) and v.shape[:1] == keep.shape}


def _text_color(bg) -> tuple:
    # ITU-R BT.601 luma: dark text on light backgrounds, light text on dark ones
    return (0, 0, 0) if 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 140 else (255, 255, 255)


class Canvas:
    """An RGB picture (HxWx3 uint8 array, copied) to draw detections on: :meth:`add_mask` for
    each mask, then :meth:`add_box` for each box (so no mask covers a label), then
    :meth:`array` or :meth:`tensor`."""

    def __init__(self, rgb: np.ndarray, alpha: float = 0.45):
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be an HxWx3 uint8 array, got {rgb.dtype} {rgb.shape}")
        self.pixels = np.array(rgb, copy=True)
        self.alpha = float(alpha)
        h, w = rgb.shape[:2]
        side = math.sqrt(h * w)
        self.font_size = max(10, int(side / 60))
        self.line_width = max(2, int(round(side / 400)))
        self._draw = None

    def add_mask(self, mask: Tensor, color, offset: Sequence[int] = (0, 0)) -> None:
        """Blends the bool/uint8 Tensor[h, w] ``mask``, whose top-left pixel is at ``offset``
        (y, x) in the picture, in ``color``, within its rows and columns."""
        m = mask.detach().cpu()
        m = m.bool() if not m.is_floating_point() else m > 0.5
        rows = torch.nonzero(m.any(1)).flatten()
        cols = torch.nonzero(m.any(0)).flatten()
        if rows.numel() == 0:
            return
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crop = m[y0:y1, x0:x1].numpy()
        oy, ox = (int(v) for v in offset)
        region = self.pixels[oy + y0 : oy + y1, ox + x0 : ox + x1]
        blend = region[crop].astype(np.float32) * (1 - self.alpha) + np.asarray(color, np.float32) * self.alpha
        region[crop] = np.round(blend).astype(np.uint8)

    def _pil(self):
        from PIL import Image, ImageDraw, ImageFont

        if self._draw is None:
            self._image = Image.fromarray(self.pixels)
            self._draw = ImageDraw.Draw(self._image)
            try:
                self._font = ImageFont.load_default(size=self.font_size)
            except (TypeError, OSError):  # an old Pillow or one without FreeType: fixed size
                self._font = ImageFont.load_default()
        return self._draw

    def add_box(self, box: Sequence[float], color, text: Optional[str] = None) -> None:
        """Outlines ``box`` (x1, y1, x2, y2 pixels) and writes ``text`` on a filled label at its
        top-left corner: above the box where there is room, else inside it."""
        draw = self._pil()
        h, w = self.pixels.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=tuple(color), width=self.line_width)
        if not text:
            return
        left, top, right, bottom = draw.textbbox((0, 0), text, font=self._font)
        pad = max(1, self.font_size // 6)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        tx = min(max(x1, 0.0), max(w - tw, 0))
        ty = y1 - th if y1 - th >= 0 else max(y1, 0.0)
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=tuple(color))
        draw.text((tx + pad - left, ty + pad - top), text, fill=_text_color(color), font=self._font)

    def array(self) -> np.ndarray:
        """The picture, HxWx3 uint8."""
        if self._draw is not None:
            self.pixels = np.array(self._image)
            self._draw = None
        return self.pixels

    def tensor(self) -> Tensor:
        """The picture, uint8 Tensor[3, H, W]."""
        return torch.from_numpy(self.array().copy()).permute(2, 0, 1)


def _bin_masks(masks: Tensor, mask_thresh: float) -> Tensor:
    m = masks.detach().cpu()
    if m.dim() == 4:
        m = m[:, 0]
    return m > mask_thresh if m.is_floating_point() else m.bool()


def draw_detections(
    image: Tensor,
    det: Dict[str, Tensor],
    class_names: Optional[Sequence[str]] = None,
    mask_thresh: float = 0.5,
    alpha: float = 0.45,
) -> Tensor:
    """Masks, boxes, labels and scores drawn on the image.

    image: Tensor[3, H, W], float in [0, 1] or uint8. det: boxes Tensor[D, 4] (x1, y1, x2, y2
    pixels), labels int64 [D], scores [D], optional masks [D, 1, H, W] (probabilities, cut at
    ``mask_thresh``) or [D, H, W]. -> uint8 Tensor[3, H, W].
    """
    img = image.detach().cpu()
    if img.dtype != torch.uint8:
        img = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
    labels = det["labels"].detach().cpu().tolist()
    if not labels:
        return img
    canvas = Canvas(img.permute(1, 2, 0).numpy(), alpha=alpha)
    palette = class_colors(max(max(labels) + 1, len(class_names) if class_names else 0))
    masks = det.get("masks")
    if masks is not None and masks.numel():
        for m, lab in zip(_bin_masks(masks, mask_thresh), labels):
            canvas.add_mask(m, palette[lab])
    boxes = det["boxes"].detach().cpu().float().tolist()
    scores = det["scores"].detach().cpu().tolist()
    for box, lab, s in zip(boxes, labels, scores):
        canvas.add_box(box, palette[lab], f"{_label_name(lab, class_names)} {s:.2f}")
    return canvas.tensor()


def detection_record(box, label: int, score: float, class_names: Optional[Sequence[str]] = None,
                     mask: Optional[Tensor] = None, offset: Sequence[int] = (0, 0),
                     image_size: Optional[Sequence[int]] = None) -> dict:
    """One detection as JSON: ``box`` [x1, y1, x2, y2] in pixels, ``label``, ``label_name``,
    ``score`` and, with a bool mask Tensor[h, w], ``mask_area`` (pixels) and ``segmentation``
    (COCO compressed RLE of the image). The mask may be a crop at ``offset`` (y, x) of an image
    of ``image_size`` (height, width)."""
    rec = {"box": [round(float(v), 2) for v in box], "label": int(label),
           "label_name": _label_name(int(label), class_names), "score": round(float(score), 5)}
    if mask is not None:
        from ..evaluation import encode_masks

        rle = encode_masks(mask[None], offset=tuple(offset), size=tuple(image_size) if image_size else None)[0]
        rec["mask_area"] = int(mask.sum())
        rec["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}
    return rec


def detections_to_records(
    det: Dict[str, Tensor],
    class_names: Optional[Sequence[str]] = None,
    mask_thresh: float = 0.5,
) -> List[dict]:
    """One :func:`detection_record` per detection; masks cut at ``mask_thresh``."""
    boxes = det["boxes"].detach().cpu().float().tolist()
    labels = det["labels"].detach().cpu().tolist()
    scores = det["scores"].detach().cpu().float().tolist()
    masks = det.get("masks")
    bin_masks = _bin_masks(masks, mask_thresh) if masks is not None else None
    return [detection_record(b, lab, s, class_names, bin_masks[i] if bin_masks is not None else None)
            for i, (b, lab, s) in enumerate(zip(boxes, labels, scores))]
