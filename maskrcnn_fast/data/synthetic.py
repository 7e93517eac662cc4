"""SyntheticShapes: a procedurally generated instance-segmentation data set (no download).

Circles, squares and triangles of random size, colour and position, overlapping, on a plain
background with mild noise, with exact instance masks. Meant for demos and smoke tests: a small
Mask R-CNN learns it from scratch on a CPU in minutes.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["SyntheticShapes"]

_TRIES_PER_SHAPE = 30


class SyntheticShapes(torch.utils.data.Dataset):
    """Images of overlapping circles (label 1), squares (2) and triangles (3).

    Item ``i`` -> ``(image, target)`` in torchvision's detection format:

    - image: float32 Tensor[3, H, W] in [0, 1]
    - target["boxes"]: float32 Tensor[K, 4], x1, y1, x2, y2 in pixels, the tight box of the
      instance's mask with pixel edges (a mask covering columns a..b gives x1 = a, x2 = b + 1)
    - target["labels"]: int64 Tensor[K] in {1, 2, 3}
    - target["masks"]: uint8 Tensor[K, H, W], 0/1, the VISIBLE part of each shape (later shapes
      are drawn over earlier ones); the masks of one image are disjoint
    - target["image_id"]: int (= i); target["area"]: float32 Tensor[K], mask pixel counts;
      target["iscrowd"]: int64 Tensor[K] of zeros

    Every item depends only on (seed, i), whatever the access order. Each instance keeps at
    least ``min_visible`` of its full area visible and at least ``min_area`` pixels; shape colours
    differ clearly from the background and from each other. K <= max_shapes: a shape that finds
    no acceptable placement in 30 tries is dropped (rare; the first shape always fits unless
    size_range and min_area leave no room, e.g. in a very elongated image).

    Args:
        num_images: length of the data set.
        image_size: H (square) or (H, W).
        min_shapes, max_shapes: number of shapes drawn per image (inclusive range).
        seed: data set seed; different seeds give independent data sets.
        transforms: optional callable ``(image, target) -> (image, target)``.
        size_range: shape half-extent (circle radius, half the square's side, the triangle's
            circumradius) as fractions of min(H, W).
        min_visible: least visible fraction of each shape's full area.
        min_area: least visible pixel count of an instance (default: max(16, 0.2 % of H*W)).
    """

    classes = ["__background__", "circle", "square", "triangle"]
    num_classes = 4

    def __init__(
        self,
        num_images: int,
        image_size: Union[int, Sequence[int]] = 128,
        min_shapes: int = 1,
        max_shapes: int = 4,
        seed: int = 0,
        transforms: Optional[Callable] = None,
        size_range: Tuple[float, float] = (0.1, 0.25),
        min_visible: float = 0.5,
        min_area: Optional[int] = None,
    ):
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if len(tuple(image_size)) != 2 or min(int(s) for s in image_size) < 8:
            raise ValueError(f"image_size must be an int or (H, W), each >= 8, got {image_size}")
        h, w = (int(s) for s in image_size)
        if not 1 <= min_shapes <= max_shapes:
            raise ValueError(f"need 1 <= min_shapes <= max_shapes, got min_shapes={min_shapes}, max_shapes={max_shapes}")
        lo, hi = size_range
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(f"size_range must satisfy 0 < lo <= hi <= 0.5, got {size_range}")
        self.num_images = int(num_images)
        self.image_size = (h, w)
        self.min_shapes, self.max_shapes = int(min_shapes), int(max_shapes)
        self.seed = int(seed)
        self.transforms = transforms
        self.size_range = (float(lo), float(hi))
        self.min_visible = float(min_visible)
        self.min_area = int(min_area) if min_area is not None else max(16, int(0.002 * h * w))
        # pixel centres, shared by every item
        self._ys = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
        self._xs = (np.arange(w, dtype=np.float32) + 0.5)[None, :]

    def __len__(self) -> int:
        return self.num_images

    def get_height_and_width(self, index: int) -> Tuple[int, int]:
        return self.image_size

    # ---- rasterisation ------------------------------------------------------------------------

    def _shape_mask(self, label: int, cx: float, cy: float, s: float, angle: float) -> np.ndarray:
        """bool [H, W]: pixels whose centre lies inside the shape."""
        dx, dy = self._xs - cx, self._ys - cy
        if label == 1:
            return dx * dx + dy * dy <= s * s
        if label == 2:
            return (np.abs(dx) <= s) & (np.abs(dy) <= s)
        # triangle: inside all three edges (vertices counter-clockwise around the centre)
        a = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        vx, vy = cx + s * np.cos(a), cy + s * np.sin(a)
        inside = np.ones((self.image_size[0], self.image_size[1]), dtype=bool)
        for k in range(3):
            x0, y0, x1, y1 = vx[k], vy[k], vx[(k + 1) % 3], vy[(k + 1) % 3]
            inside &= (x1 - x0) * (self._ys - y0) - (y1 - y0) * (self._xs - x0) >= 0
        return inside

    @staticmethod
    def _contrasting(rng: np.random.Generator, others: List[np.ndarray], min_dist: float) -> np.ndarray:
        best, best_d = None, -1.0
        for _ in range(50):
            c = rng.uniform(0.0, 1.0, 3)
            d = min(float(np.abs(c - o).max()) for o in others)
            if d >= min_dist:
                return c
            if d > best_d:
                best, best_d = c, d
        return best

    def _generate(self, index: int) -> Tuple[np.ndarray, List[int], List[np.ndarray]]:
        rng = np.random.default_rng([self.seed, index])
        h, w = self.image_size
        side = min(h, w)
        bg = rng.uniform(0.0, 1.0, 3)
        n = int(rng.integers(self.min_shapes, self.max_shapes + 1))
        labels: List[int] = []
        visible: List[np.ndarray] = []  # current visible mask of each kept shape
        full_area: List[int] = []
        colours: List[np.ndarray] = []
        image = np.empty((h, w, 3), dtype=np.float32)
        image[:] = bg
        for _ in range(n):
            for _try in range(_TRIES_PER_SHAPE):
                label = int(rng.integers(1, 4))
                s = rng.uniform(*self.size_range) * side
                cx = rng.uniform(s, w - s) if w > 2 * s else w / 2
                cy = rng.uniform(s, h - s) if h > 2 * s else h / 2
                angle = rng.uniform(0.0, 2 * np.pi)
                m = self._shape_mask(label, cx, cy, s, angle)
                area = int(m.sum())
                if area < self.min_area:
                    continue
                ok = all(
                    int((v & ~m).sum()) >= max(self.min_visible * a, self.min_area)
                    for v, a in zip(visible, full_area)
                )
                if ok:
                    break
            else:
                continue
            colour = self._contrasting(rng, [bg] + colours, 0.35)
            for j, v in enumerate(visible):
                visible[j] = v & ~m
            image[m] = colour
            labels.append(label)
            visible.append(m)
            full_area.append(area)
            colours.append(colour)
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        noise *= 0.03
        image += noise
        np.clip(image, 0.0, 1.0, out=image)
        return image, labels, visible

    # ---- items --------------------------------------------------------------------------------

    def __getitem__(self, index: int) -> Tuple[Tensor, Dict[str, Tensor]]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for SyntheticShapes of length {len(self)}")
        image, labels, visible = self._generate(index)
        h, w = self.image_size
        k = len(labels)
        masks = np.stack(visible) if k else np.zeros((0, h, w), dtype=bool)
        rows, cols = masks.any(axis=2), masks.any(axis=1)  # [K, H], [K, W]
        boxes = np.zeros((k, 4), dtype=np.float32)
        if k:
            boxes[:, 0] = cols.argmax(axis=1)
            boxes[:, 1] = rows.argmax(axis=1)
            boxes[:, 2] = w - cols[:, ::-1].argmax(axis=1)
            boxes[:, 3] = h - rows[:, ::-1].argmax(axis=1)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
            "image_id": index,
            "area": torch.from_numpy(masks.reshape(k, -1).sum(axis=1).astype(np.float32)),
            "iscrowd": torch.zeros(k, dtype=torch.int64),
        }
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_images={self.num_images}, image_size={self.image_size}, "
            f"shapes={self.min_shapes}..{self.max_shapes}, seed={self.seed})"
        )
