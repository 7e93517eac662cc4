"""A COCO-format instance segmentation data set in torchvision's detection format."""
import contextlib
import io
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .._pycocotools import pycocotools

__all__ = ["CocoDetection", "decode_segmentation", "load_image"]


def load_image(path: str) -> torch.Tensor:
    """Reads an image file as RGB -> float32 Tensor[3, H, W] in [0, 1].

    Raises OSError naming the file when it is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            rgb.load()
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three on corrupt files
        raise OSError(f"cannot read image {path!r}: {e}") from e
    # np.array copies: torch.from_numpy on PIL's read-only buffer warns.
    arr = np.array(rgb, dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32).div_(255.0)


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed RLE or compressed RLE) -> uint8 [H, W].

    Polygons with fewer than 3 points are skipped; none left gives an empty mask. Needs
    pycocotools (raises ImportError naming it otherwise).
    """
    mask_utils = pycocotools("decoding a COCO segmentation").mask
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if [int(s) for s in segm["size"]] != [height, width]:
            raise ValueError(
                f"segmentation RLE size {list(segm['size'])} does not match the image "
                f"({height}, {width})"
            )
        counts = segm["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def _valid_for_training(anns: List[dict]) -> bool:
    """True when an image has an annotation a detector can learn from: a non-crowd box larger
    than one pixel each way (what torchvision's reference keeps)."""
    return any(
        not a.get("iscrowd", 0) and len(a.get("bbox", [])) == 4 and a["bbox"][2] > 1 and a["bbox"][3] > 1
        for a in anns
    )


class CocoDetection(torch.utils.data.Dataset):
    """A folder of images with a COCO instances JSON.

    Args:
        root (str): folder the JSON's ``file_name`` entries are relative to.
        ann_file (str): the instances JSON (polygons, uncompressed or compressed RLE).
        transforms (callable, optional): ``transforms(image, target) -> (image, target)``.
        remove_images_without_annotations (bool): keep only images with at least one non-crowd
            box larger than one pixel each way (for training).
        skip_crowd (bool): drop ``iscrowd`` annotations from the targets (torchvision's training
            recipe does; the model does not treat crowd boxes specially).

    Items are ``(image, target)``: image float32 Tensor[3, H, W] in [0, 1]; target ``boxes``
    float32 [K, 4] (x1, y1, x2, y2 pixels, clamped to the image; empty boxes dropped), ``labels``
    int64 [K] in 1..C, ``masks`` uint8 [K, H, W], ``image_id`` int (the COCO image id), ``area``
    float32 [K] (the JSON's ``area``), ``iscrowd`` int64 [K]. An annotation without a
    ``segmentation`` gets its box as mask.

    Category ids are mapped to contiguous labels in increasing id order:
    ``cat_id_to_label``, ``label_to_cat_id``; ``classes[label]`` is the category name,
    ``classes[0] == "__background__"``; ``num_classes = C + 1``. The pycocotools object is
    ``coco`` and the image ids, in item order, ``ids``. Needs pycocotools (raises ImportError
    naming it otherwise).
    """

    def __init__(
        self,
        root: str,
        ann_file: str,
        transforms: Optional[Callable] = None,
        remove_images_without_annotations: bool = False,
        skip_crowd: bool = False,
    ):
        self.root = os.fspath(root)
        self.ann_file = os.fspath(ann_file)
        self.transforms = transforms
        self.skip_crowd = skip_crowd
        COCO = pycocotools("reading a COCO annotation file").coco.COCO
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints timings
            self.coco = COCO(self.ann_file)
        ids = sorted(self.coco.imgs.keys())
        if remove_images_without_annotations:
            ids = [i for i in ids if _valid_for_training(self.coco.imgToAnns.get(i, []))]
        self.ids: List[int] = ids

        cat_ids = sorted(self.coco.cats.keys())
        self.cat_id_to_label: Dict[int, int] = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.label_to_cat_id: Dict[int, int] = {i + 1: c for i, c in enumerate(cat_ids)}
        self.classes: List[str] = ["__background__"] + [str(self.coco.cats[c].get("name", c)) for c in cat_ids]
        self.num_classes: int = len(cat_ids) + 1

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
        boxes, labels, masks, areas, crowd = [], [], [], [], []
        for a in anns:
            x, y, w, h = (float(v) for v in a["bbox"])
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if not (x2 > x1 and y2 > y1):
                continue
            if a.get("segmentation"):
                m = decode_segmentation(a["segmentation"], height, width)
            else:
                m = np.zeros((height, width), dtype=np.uint8)
                m[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = 1
            boxes.append([x1, y1, x2, y2])
            labels.append(self.cat_id_to_label[a["category_id"]])
            masks.append(m)
            areas.append(float(a.get("area", w * h)))
            crowd.append(int(a.get("iscrowd", 0)))
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, height, width), dtype=torch.uint8),
            "image_id": int(image_id),
            "area": torch.tensor(areas, dtype=torch.float32),
            "iscrowd": torch.tensor(crowd, dtype=torch.int64),
        }

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        height, width = self.get_height_and_width(index)
        path = self.image_path(index)
        image = load_image(path)
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
