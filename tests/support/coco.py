"""A tiny COCO-format folder for the data and evaluation tests (not a test module).

Imports without pycocotools (the test modules that import this one must collect on a machine
without it); make_coco_folder needs it.
"""
import json

import numpy as np
from PIL import Image

# Non-contiguous, unsorted category ids: labels follow increasing id (3 -> 1, 5 -> 2, 7 -> 3).
CATEGORIES = [{"id": 7, "name": "square"}, {"id": 3, "name": "circle"}, {"id": 5, "name": "blob"}]
IMAGES = [  # (id, file, width, height)
    (11, "a.png", 40, 30),
    (12, "sub/b.png", 20, 50),
    (13, "c.png", 30, 30),
]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with zeros, as COCO's iscrowd annotations store them."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _bbox(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def make_coco_folder(root, corrupt=False):
    """Writes images and instances.json under ``root``; returns (root, ann_file, expected) where
    ``expected[image_id]`` lists (cat_id, mask, iscrowd) of the annotations the data set keeps."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    images, anns, expected = [], [], {}
    for img_id, name, w, h in IMAGES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        images.append({"id": img_id, "file_name": name, "width": w, "height": h})
        expected[img_id] = []

    def add(img_id, cat, segm, mask, bbox, iscrowd=0, keep=True):
        anns.append({
            "id": len(anns) + 1, "image_id": img_id, "category_id": cat, "segmentation": segm,
            "bbox": bbox, "area": float(mask.sum()), "iscrowd": iscrowd,
        })
        if keep:
            expected[img_id].append((cat, mask, iscrowd))

    h, w = 30, 40
    # Polygon: pycocotools rasterises it; the expected mask is its own decoding.
    poly = [[4.0, 3.0, 16.0, 3.0, 16.0, 13.0, 4.0, 13.0]]
    m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, h, w)))
    add(11, 7, poly, m, _bbox(m))
    # Compressed RLE with str counts.
    m = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    m[(yy - 20) ** 2 + (xx - 28) ** 2 <= 36] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    add(11, 3, rle, m, _bbox(m))
    # Crowd region as uncompressed RLE.
    m = np.zeros((h, w), np.uint8)
    m[18:28, 2:14] = 1
    add(11, 5, _uncompressed_rle(m), m, _bbox(m), iscrowd=1)
    # Zero-width box with empty polygons: the data set drops it. Crowd, so that the JSON-based
    # evaluation ignores it too (a non-crowd one would be a ground truth nothing can match).
    add(11, 3, [], np.zeros((h, w), np.uint8), [10.0, 10.0, 0.0, 5.0], iscrowd=1, keep=False)

    h, w = 50, 20
    m = np.zeros((h, w), np.uint8)
    m[5:40, 3:12] = 1
    m[20:25, 12:18] = 1
    add(12, 5, _uncompressed_rle(m), m, _bbox(m))
    # Image 13 has no annotations.

    if corrupt:
        (root / "bad.png").write_bytes(b"not a png")
        images.append({"id": 14, "file_name": "bad.png", "width": 8, "height": 8})
        expected[14] = []
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return root, ann_file, expected


def _poly(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def make_photo_coco_folder(root):
    """A hand-made COCO folder as users make them; returns (root, ann_file).

    1 wide.png 48x32 (WxH): a box, one reaching past the right edge (clipped), one wholly
      outside (dropped), one of zero width (dropped), a crowd region (not trained);
    2 wide2.png 48x32: a box;
    3 tall16.png 20x40: a 16-bit grayscale PNG, alone in its aspect-ratio group;
    4 phone.jpg: stored 40x30 with EXIF orientation 6 (turn 90 degrees clockwise), so shown
      and annotated 30x40;
    5 empty.png 48x32: no annotation (left out of training).
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / "wide.png")
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / "wide2.png")
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / "empty.png")
    Image.fromarray((np.arange(40 * 20, dtype=np.uint16).reshape(40, 20) * 80)).save(root / "tall16.png")
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:10, :] = (255, 0, 0)  # red along the stored top: the shown right side after turning
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "phone.jpg", exif=exif, quality=95)
    images = [{"id": 1, "file_name": "wide.png", "width": 48, "height": 32},
              {"id": 2, "file_name": "wide2.png", "width": 48, "height": 32},
              {"id": 3, "file_name": "tall16.png", "width": 20, "height": 40},
              {"id": 4, "file_name": "phone.jpg", "width": 30, "height": 40},
              {"id": 5, "file_name": "empty.png", "width": 48, "height": 32}]
    anns = []

    def add(img, bbox, segm=None, iscrowd=0, cat=1):
        x, y, w, h = bbox
        anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat, "bbox": bbox, "iscrowd": iscrowd,
                     "area": float(w * h), "segmentation": segm if segm is not None else _poly(x, y, x + w, y + h)})

    add(1, [4, 4, 10, 8])
    add(1, [40, 20, 20, 10], _poly(40, 20, 47, 29), cat=2)  # past the right edge: clipped
    add(1, [60, 5, 10, 10], [])  # wholly outside: zero width once clipped
    add(1, [10, 10, 0, 5], [])  # zero width
    crowd = np.zeros((32, 48), np.uint8)
    crowd[20:30, 2:12] = 1
    add(1, [2, 20, 10, 10], _uncompressed_rle(crowd), iscrowd=1, cat=2)
    add(2, [8, 6, 20, 12])
    add(3, [2, 4, 12, 30], cat=2)
    add(4, [5, 5, 15, 25])
    ann_file = root / "instances.json"
    cats = [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root, ann_file
