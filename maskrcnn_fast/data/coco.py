"""A COCO-format instance segmentation data set in torchvision's detection format."""
import contextlib
import io
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..structures import PackedMasks
from .cocoapi import pycocotools
from .images import load_image
from .segmentations import decode_segmentation_crop, rle_counts, usable_polygons

__all__ = ["CocoDetection", "decode_segmentation", "load_image"]


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed RLE or compressed RLE) -> uint8 [H, W].

    Polygons with fewer than 3 points are skipped; none left gives an empty mask. An RLE of
    another size, or whose counts do not cover the image, is a ValueError. Needs pycocotools
    (raises ImportError naming it otherwise).
    """
    mask_utils = pycocotools("decoding a COCO segmentation").mask
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        rle_counts(segm, height, width)  # the size and the counts' cover checked, as the packed form checks them
        counts = segm["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def _segmentation_problem(segm: Any, info: Optional[dict]) -> Optional[str]:
    """What makes a (non-empty) COCO segmentation unusable, or None: polygons must be lists of
    numbers, an RLE a dict with counts and its image's size."""
    if isinstance(segm, list):
        for i, p in enumerate(segm):
            if not (isinstance(p, (list, tuple)) and all(isinstance(v, (int, float)) for v in p)):
                return f"whose polygon {i} is not a list of numbers x1, y1, x2, y2, ..."
        return None
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if info is not None and not (isinstance(size, (list, tuple)) and len(size) == 2
                                     and [int(v) for v in size] == [int(info["height"]), int(info["width"])]):
            return (f"RLE of size {size!r}, not its image's (height, width) = "
                    f"({info['height']}, {info['width']})")
        if not isinstance(segm["counts"], (list, tuple, str, bytes)):
            return f"RLE whose counts are a {type(segm['counts']).__name__}, not a list or a string"
        return None
    return f"of type {type(segm).__name__}: polygons (a list) or an RLE (a dict with counts and size) expected"


def _usable_for_training(anns: List[dict]) -> bool:
    """torchvision's reference rule (_coco_remove_images_without_annotations): an image is kept
    when one of its annotations, crowd ones included, is more than one pixel wide and high."""
    return any(all(v > 1 for v in a["bbox"][2:]) for a in anns)


def _clip_box(bbox, height: int, width: int) -> Tuple[float, float, float, float]:
    # as torchvision's ConvertCocoPolysToMask: xywh -> xyxy, clamped to the image
    x, y, w, h = (float(v) for v in bbox)
    return (min(max(x, 0.0), width), min(max(y, 0.0), height),
            min(max(x + w, 0.0), width), min(max(y + h, 0.0), height))


class CocoDetection(torch.utils.data.Dataset):
    """A folder of images with a COCO instances JSON.

    Args:
        root (str): folder the JSON's ``file_name`` entries are relative to.
        ann_file (str): the instances JSON (polygons, uncompressed or compressed RLE).
        transforms (callable, optional): ``transforms(image, target) -> (image, target)``.
        remove_images_without_annotations (bool): keep only images with an annotation more
            than one pixel wide and high, crowd ones included (torchvision's training recipe).
        skip_crowd (bool): drop ``iscrowd`` annotations from the targets (torchvision's training
            recipe does: a crowd region is not one object).
        mask_format (str): ``"dense"`` (torchvision's uint8 [K, H, W], the default) or
            ``"packed"``: a :class:`maskrcnn_fast.structures.PackedMasks`, each annotation decoded
            straight to its mask's tight crop (never a full-size mask; the same masks).

    Items are ``(image, target)``: image float32 Tensor[3, H, W] in [0, 1]; target ``boxes``
    float32 [K, 4] (x1, y1, x2, y2 pixels, clamped to the image; boxes of zero width or height
    after clamping dropped, as torchvision's recipe does), ``labels`` int64 [K] in 1..C,
    ``masks`` uint8 [K, H, W], ``image_id`` int (the COCO image id), ``area`` float32 [K] (the
    JSON's ``area``), ``iscrowd`` int64 [K]. An annotation without a ``segmentation`` gets its
    box as mask. An image whose EXIF orientation turns it is turned only when the JSON's size
    is the turned one. Polygons of fewer than 3 points are skipped (counted in ``drops``); an
    annotation left without a pixel keeps an empty mask, as torchvision's recipe keeps it.

    Category ids are mapped to contiguous labels in increasing id order:
    ``cat_id_to_label``, ``label_to_cat_id``; ``classes[label]`` is the category name,
    ``classes[0] == "__background__"``; ``num_classes = C + 1``. The pycocotools object is
    ``coco`` and the image ids, in item order, ``ids``. ``drops`` counts what the items leave
    out (see :meth:`drop_summary`). Raises ValueError, naming the annotation, for an annotation
    whose category id is not in ``categories``, whose bbox is not 4 numbers, or whose
    segmentation is neither polygons nor an RLE of its image's size (at construction), and for
    RLE counts that do not cover the image (when the item is read). Needs pycocotools
    (raises ImportError naming it otherwise).
    """

    def __init__(
        self,
        root: str,
        ann_file: str,
        transforms: Optional[Callable] = None,
        remove_images_without_annotations: bool = False,
        skip_crowd: bool = False,
        mask_format: str = "dense",
    ):
        if mask_format not in ("dense", "packed"):
            raise ValueError(f"mask_format must be 'dense' or 'packed', got {mask_format!r}")
        self.mask_format = mask_format
        self.root = os.fspath(root)
        self.ann_file = os.fspath(ann_file)
        self.transforms = transforms
        self.skip_crowd = skip_crowd
        COCO = pycocotools("reading a COCO annotation file").coco.COCO
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints timings
            self.coco = COCO(self.ann_file)
        self._check_annotations()
        ids = sorted(self.coco.imgs.keys())
        total = len(ids)
        if remove_images_without_annotations:
            ids = [i for i in ids if _usable_for_training(self.coco.imgToAnns.get(i, []))]
        self.ids: List[int] = ids

        cat_ids = sorted(self.coco.cats.keys())
        self.cat_id_to_label: Dict[int, int] = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.label_to_cat_id: Dict[int, int] = {i + 1: c for i, c in enumerate(cat_ids)}
        self.classes: List[str] = ["__background__"] + [str(self.coco.cats[c].get("name", c)) for c in cat_ids]
        self.num_classes: int = len(cat_ids) + 1
        self.drops: Dict[str, int] = self._count_drops(total)

    def _check_annotations(self) -> None:
        """Fails at construction, not hours into training, on what no item could be made of."""
        cats = self.coco.cats
        for a in self.coco.dataset.get("annotations", []):
            what = f"{self.ann_file}: annotation {a.get('id')} (image {a.get('image_id')})"
            if a.get("category_id") not in cats:
                raise ValueError(f"{what} has category_id {a.get('category_id')!r}, which is not in "
                                 f"categories (ids {sorted(cats)})")
            box = a.get("bbox")
            if not (isinstance(box, (list, tuple)) and len(box) == 4
                    and all(isinstance(v, (int, float)) and np.isfinite(v) for v in box)):
                raise ValueError(f"{what} has bbox {box!r}: 4 finite numbers x, y, width, height expected")
            segm = a.get("segmentation")
            if segm:
                problem = _segmentation_problem(segm, self.coco.imgs.get(a.get("image_id")))
                if problem:
                    raise ValueError(f"{what} has a segmentation {problem}")
        for i, info in self.coco.imgs.items():
            if not all(isinstance(info.get(k), (int, float)) and info[k] > 0 and float(info[k]).is_integer()
                       for k in ("height", "width")):
                raise ValueError(f"{self.ann_file}: image {i} needs positive integer height and width, "
                                 f"got {info.get('height')!r} x {info.get('width')!r}")

    def _count_drops(self, total_images: int) -> Dict[str, int]:
        counts = {"images": total_images - len(self.ids), "crowd": 0, "clipped": 0, "empty": 0, "polygons": 0,
                  "orphans": sum(1 for a in self.coco.dataset.get("annotations", [])
                                 if a.get("image_id") not in self.coco.imgs)}
        for image_id in self.ids:
            info = self.coco.imgs[image_id]
            for a in self.coco.imgToAnns.get(image_id, []):
                if self.skip_crowd and a.get("iscrowd", 0):
                    counts["crowd"] += 1
                    continue
                x1, y1, x2, y2 = _clip_box(a["bbox"], info["height"], info["width"])
                x, y, w, h = (float(v) for v in a["bbox"])
                segm = a.get("segmentation")
                if not (x2 > x1 and y2 > y1):
                    counts["empty"] += 1
                    continue
                if isinstance(segm, list):
                    counts["polygons"] += len(segm) - len(usable_polygons(segm))
                if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                    counts["clipped"] += 1
        return counts

    def drop_summary(self) -> str:
        """One line: what the items leave out of the JSON, and why."""
        d = self.drops
        parts = [f"{len(self.ids)} of {len(self.ids) + d['images']} images"]
        if d["images"]:
            parts[0] += f" ({d['images']} without an annotation over 1 pixel wide and high: skipped)"
        notes = [(d["crowd"], "iscrowd (not trained as objects)"),
                 (d["empty"], "of zero width or height inside the image (dropped)"),
                 (d["clipped"], "reaching outside the image (clipped to it)"),
                 (d.get("polygons", 0), "polygons of fewer than 3 points (skipped)"),
                 (d["orphans"], "of image ids not in images (ignored)")]
        ann = [f"{n} {why}" for n, why in notes if n]
        return f"{os.path.basename(self.ann_file)}: " + "; annotations: ".join(
            [", ".join(parts)] + ([", ".join(ann)] if ann else []))

    def use_category_ids_as_labels(self) -> None:
        """Labels become the category ids themselves (``num_classes = max id + 1``; ``classes``
        "N/A" where no category has the id), as torchvision's COCO models predict them. Detections of
        an "N/A" label are left out of the scores."""
        ids = sorted(self.coco.cats)
        self.cat_id_to_label = {c: c for c in ids}
        # every label, "N/A" ones too: COCOeval scores the declared categories and ignores the rest
        self.label_to_cat_id = {c: c for c in range(1, ids[-1] + 1)}
        names = {c: str(self.coco.cats[c].get("name", c)) for c in ids}
        self.classes = ["__background__"] + [names.get(i, "N/A") for i in range(1, ids[-1] + 1)]
        self.num_classes = ids[-1] + 1

    def missing_images(self) -> List[str]:
        """The paths of the items' image files that do not exist."""
        return [p for p in (self.image_path(i) for i in range(len(self))) if not os.path.isfile(p)]

    def __len__(self) -> int:
        return len(self.ids)

    def get_height_and_width(self, index: int) -> Tuple[int, int]:
        """(height, width) of item ``index`` from the JSON, without decoding the image."""
        info = self.coco.imgs[self.ids[index]]
        return int(info["height"]), int(info["width"])

    def image_path(self, index: int) -> str:
        return os.path.join(self.root, self.coco.imgs[self.ids[index]]["file_name"])

    def _target(self, image_id: int, height: int, width: int) -> Dict[str, Any]:
        anns = self.coco.imgToAnns.get(image_id, [])
        if self.skip_crowd:
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        packed = self.mask_format == "packed"
        boxes, labels, masks, areas, crowd = [], [], [], [], []
        crops, pieces, offset = [], [], 0
        for a in anns:
            x1, y1, x2, y2 = _clip_box(a["bbox"], height, width)
            if not (x2 > x1 and y2 > y1):
                continue
            segm = a.get("segmentation")
            try:
                if packed:
                    if segm:
                        x0, y0, crop = decode_segmentation_crop(segm, height, width)
                    else:  # the box as mask
                        x0, y0 = int(x1), int(y1)
                        crop = np.ones((int(np.ceil(y2)) - y0, int(np.ceil(x2)) - x0), dtype=np.uint8)
                    crops.append((offset, x0, y0, crop.shape[1], crop.shape[0]))
                    pieces.append(crop.reshape(-1))
                    offset += crop.size
                elif segm:
                    masks.append(decode_segmentation(segm, height, width))
                else:
                    m = np.zeros((height, width), dtype=np.uint8)
                    m[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = 1
                    masks.append(m)
            except ValueError as e:
                raise ValueError(f"{self.ann_file}: annotation {a.get('id')} (image {image_id}): {e}") from None
            boxes.append([x1, y1, x2, y2])
            labels.append(self.cat_id_to_label[a["category_id"]])
            areas.append(float(a.get("area", a["bbox"][2] * a["bbox"][3])))
            crowd.append(int(a.get("iscrowd", 0)))
        if packed:
            data = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
            target_masks = PackedMasks(torch.from_numpy(data), torch.tensor(crops, dtype=torch.int64).reshape(-1, 5),
                                       (height, width))
        elif masks:
            target_masks = torch.from_numpy(np.stack(masks))
        else:
            target_masks = torch.zeros((0, height, width), dtype=torch.uint8)
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": target_masks,
            "image_id": int(image_id),
            "area": torch.tensor(areas, dtype=torch.float32),
            "iscrowd": torch.tensor(crowd, dtype=torch.int64),
        }

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        height, width = self.get_height_and_width(index)
        path = self.image_path(index)
        image = load_image(path, expect_hw=(height, width))
        if tuple(image.shape[1:]) != (height, width):
            raise ValueError(
                f"image {path!r} is {image.shape[2]}x{image.shape[1]} (WxH) but {self.ann_file} "
                f"says {width}x{height}"
            )
        target = self._target(image_id, height, width)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={self.root!r}, ann_file={self.ann_file!r}, "
            f"images={len(self)}, num_classes={self.num_classes})"
        )
