"""Drawing detections on images, and detections as JSON-ready records."""
import colorsys
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["class_colors", "draw_detections", "detections_to_records", "select_detections"]


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
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    img = image.detach().cpu()
    if img.dtype != torch.uint8:
        img = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
    boxes = det["boxes"].detach().cpu().float()
    labels = det["labels"].detach().cpu().tolist()
    scores = det["scores"].detach().cpu().tolist()
    if not labels:
        return img
    n_colors = max(max(labels) + 1, len(class_names) if class_names else 0)
    palette = class_colors(n_colors)
    colors = [palette[lab] for lab in labels]
    masks = det.get("masks")
    if masks is not None and masks.numel():
        m = masks.detach().cpu()
        if m.dim() == 4:
            m = m[:, 0]
        m = m > mask_thresh if m.is_floating_point() else m.bool()
        img = draw_segmentation_masks(img, m, alpha=alpha, colors=colors)
    text = [f"{_label_name(lab, class_names)} {s:.2f}" for lab, s in zip(labels, scores)]
    return draw_bounding_boxes(img, boxes, labels=text, colors=colors, width=2)


def detections_to_records(
    det: Dict[str, Tensor],
    class_names: Optional[Sequence[str]] = None,
    mask_thresh: float = 0.5,
) -> List[dict]:
    """One dict per detection: ``box`` [x1, y1, x2, y2], ``label``, ``label_name``, ``score`` and,
    with masks, ``segmentation`` (COCO compressed RLE of the mask cut at ``mask_thresh``) and
    ``mask_area`` (pixels)."""
    boxes = det["boxes"].detach().cpu().float().tolist()
    labels = det["labels"].detach().cpu().tolist()
    scores = det["scores"].detach().cpu().float().tolist()
    masks = det.get("masks")
    bin_masks = None
    if masks is not None:
        m = masks.detach().cpu()
        if m.dim() == 4:
            m = m[:, 0]
        bin_masks = m > mask_thresh if m.is_floating_point() else m.bool()
    rles = None
    if bin_masks is not None:
        from .evaluation import encode_masks

        rles = encode_masks(bin_masks)
    out = []
    for i, (box, lab, sc) in enumerate(zip(boxes, labels, scores)):
        rec = {"box": [round(v, 2) for v in box], "label": int(lab),
               "label_name": _label_name(int(lab), class_names), "score": round(float(sc), 5)}
        if rles is not None:
            rec["mask_area"] = int(bin_masks[i].sum())
            rec["segmentation"] = {"size": [int(v) for v in rles[i]["size"]], "counts": rles[i]["counts"]}
        out.append(rec)
    return out
