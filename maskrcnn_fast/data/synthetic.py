"""SyntheticShapes: a procedurally generated instance-segmentation data set (no download).

Circles, squares and triangles of random size, colour and position, overlapping, on a plain
background with mild noise, with exact instance masks. Meant for demos and smoke tests: a small
Mask R-CNN learns it from scratch on a CPU in minutes.
"""
import mmap
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..structures import PackedMasks

__all__ = ["SyntheticShapes", "write_synthetic_pngs"]

_TRIES_PER_SHAPE = 30
_COLOUR_TRIES = 50
_ALL_COLOURS = 64  # shapes whose colours differ from every earlier one; later ones, from their neighbours'
_NEAR = 2  # pixels around a shape's box within which another shape is its neighbour
_TRIANGLE_AREA = 3 * np.sqrt(3) / 4  # area of a triangle of circumradius 1


def _lazy_zeros(shape: Tuple[int, ...]) -> np.ndarray:
    """uint8 zeros whose memory is taken page by page as it is written (anonymous mmap): the
    masks are written box by box, so K x H x W costs about the boxes' rows, not K x H x W
    (numpy's own large allocations ask for huge pages, which zero 2 MB at the first write)."""
    size = int(np.prod(shape))
    if size == 0:
        return np.zeros(shape, dtype=np.uint8)
    return np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8).reshape(shape)


class SyntheticShapes(torch.utils.data.Dataset):
    """Images of overlapping circles (label 1), squares (2) and triangles (3).

    Item ``i`` -> ``(image, target)`` in torchvision's detection format:

    - image: float32 Tensor[3, H, W] in [0, 1]
    - target["boxes"]: float32 Tensor[K, 4], x1, y1, x2, y2 in pixels, the tight box of the
      instance's mask with pixel edges (a mask covering columns a..b gives x1 = a, x2 = b + 1)
    - target["labels"]: int64 Tensor[K] in {1, 2, 3}
    - target["masks"]: uint8 Tensor[K, H, W], 0/1, the VISIBLE part of each shape (later shapes
      are drawn over earlier ones); the masks of one image are disjoint. With
      ``mask_format="packed"``: the same masks as a :class:`maskrcnn_fast.structures.PackedMasks`
      (each mask's tight crop in its box), built straight from each shape's box
    - target["image_id"]: int (= i); target["area"]: float32 Tensor[K], mask pixel counts;
      target["iscrowd"]: int64 Tensor[K] of zeros

    Every item depends only on (seed, i), whatever the access order. Each instance keeps at
    least ``min_visible`` of its full area visible and at least ``min_area`` pixels. Shape colours
    differ clearly from the background and from each other: the first 64 shapes' from every
    earlier one, later shapes' from the shapes within 2 pixels of their box (thousands of colours
    cannot all differ; neighbours' can); the farthest of 50 draws where none differs enough.
    K <= max_shapes: a shape that finds no acceptable placement in 30
    tries is dropped (rare in sparse scenes, common in crowded ones); an image whose shapes are
    all dropped has an empty target (boxes [0, 4], labels [0], masks [0, H, W]).

    Dense scenes (many small objects), e.g. ``SyntheticShapes(n, 1024, min_shapes=500,
    max_shapes=3000, size_range=(0.005, 0.015))``: each shape costs work in proportion to its own
    box, not to the image, so such an image takes seconds. Dense masks are full-size: K x H x W
    bytes per item, allocated lazily (untouched pages cost no memory until written); packed ones
    (``mask_format="packed"``) hold each object's own pixels only.

    Args:
        num_images: length of the data set.
        image_size: H (square) or (H, W).
        min_shapes, max_shapes: number of shapes drawn per image (inclusive range).
        seed: data set seed; different seeds give independent data sets.
        transforms: optional callable ``(image, target) -> (image, target)``.
        size_range: shape half-extent (circle radius, half the square's side, the triangle's
            circumradius) as fractions of min(H, W).
        min_visible: least visible fraction of each shape's full area, in [0, 1].
        min_area: least visible pixel count of an instance, >= 1. Default: max(16, 0.2 % of
            H*W), but at most half the area of the smallest shape ``size_range`` allows (a
            triangle of circumradius ``size_range[0] * min(H, W)``), so that small shapes are
            kept. A value above the largest shape's area (a square of half-side
            ``size_range[1] * min(H, W)``) is a ValueError: no shape could be kept.
        mask_format: ``"dense"`` (torchvision's uint8 [K, H, W], the default) or ``"packed"``
            (a PackedMasks: memory that grows with the objects, not with objects x pixels).
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
        mask_format: str = "dense",
    ):
        if mask_format not in ("dense", "packed"):
            raise ValueError(f"mask_format must be 'dense' or 'packed', got {mask_format!r}")
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if len(tuple(image_size)) != 2 or min(int(s) for s in image_size) < 8:
            raise ValueError(f"image_size must be an int or (H, W), each >= 8, got {image_size}")
        h, w = (int(s) for s in image_size)
        if min_shapes < 1:
            raise ValueError(f"min_shapes must be >= 1, got {min_shapes}")
        if max_shapes < min_shapes:
            raise ValueError(f"max_shapes must be >= min_shapes, got min_shapes={min_shapes}, max_shapes={max_shapes}")
        try:
            lo, hi = (float(v) for v in size_range)
        except (TypeError, ValueError):
            raise ValueError(f"size_range must be two numbers (lo, hi), got {size_range!r}") from None
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(f"size_range must satisfy 0 < lo <= hi <= 0.5, got {tuple(size_range)}")
        if not 0 <= min_visible <= 1:
            raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
        side = min(h, w)
        largest = int((2 * hi * side + 1) ** 2)  # more pixels than the largest square covers
        if min_area is None:
            smallest = _TRIANGLE_AREA * (lo * side) ** 2
            min_area = max(1, min(max(16, int(0.002 * h * w)), int(0.5 * smallest)))
        elif min_area < 1:
            raise ValueError(f"min_area must be >= 1, got {min_area}")
        elif min_area > largest:
            raise ValueError(
                f"min_area={min_area} is more than the largest shape size_range={tuple(size_range)} allows in a "
                f"{h}x{w} image covers (under {largest} pixels): no shape could be kept; lower min_area or raise "
                "size_range")
        self.num_images = int(num_images)
        self.image_size = (h, w)
        self.min_shapes, self.max_shapes = int(min_shapes), int(max_shapes)
        self.seed = int(seed)
        self.transforms = transforms
        self.size_range = (lo, hi)
        self.min_visible = float(min_visible)
        self.min_area = int(min_area)
        self.mask_format = mask_format
        # pixel centres, shared by every item
        self._ys = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
        self._xs = (np.arange(w, dtype=np.float32) + 0.5)[None, :]

    def __len__(self) -> int:
        return self.num_images

    def get_height_and_width(self, index: int) -> Tuple[int, int]:
        return self.image_size

    # ---- rasterisation ------------------------------------------------------------------------

    def _shape_crop(self, label: int, cx: float, cy: float, s: float, angle: float) -> Tuple[int, int, np.ndarray]:
        """-> (y0, x0, bool [h', w']): the pixels whose centre lies inside the shape, in a box at
        (y0, x0) that holds every such pixel of the image (the shape's extent plus a pixel)."""
        h, w = self.image_size
        if label == 3:
            a = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3
            vx, vy = cx + s * np.cos(a), cy + s * np.sin(a)
            left, right, top, bottom = vx.min(), vx.max(), vy.min(), vy.max()
        else:
            left, right, top, bottom = cx - s, cx + s, cy - s, cy + s
        x0, x1 = max(0, int(np.floor(left)) - 1), min(w, int(np.ceil(right)) + 1)
        y0, y1 = max(0, int(np.floor(top)) - 1), min(h, int(np.ceil(bottom)) + 1)
        xs, ys = self._xs[:, x0:max(x0, x1)], self._ys[y0:max(y0, y1)]
        dx, dy = xs - cx, ys - cy
        if label == 1:
            return y0, x0, dx * dx + dy * dy <= s * s
        if label == 2:
            return y0, x0, (np.abs(dx) <= s) & (np.abs(dy) <= s)
        # triangle: inside all three edges (vertices counter-clockwise around the centre)
        inside = np.ones((ys.shape[0], xs.shape[1]), dtype=bool)
        for k in range(3):
            ax, ay, bx, by = vx[k], vy[k], vx[(k + 1) % 3], vy[(k + 1) % 3]
            inside &= (bx - ax) * (ys - ay) - (by - ay) * (xs - ax) >= 0
        return y0, x0, inside

    @staticmethod
    def _contrasting(rng: np.random.Generator, others: np.ndarray, min_dist: float) -> np.ndarray:
        """The first of up to 50 uniform colours at least min_dist (max-norm) from every colour of
        others [3, N], else the farthest of the 50; draws from rng only the colours it tried."""
        state = rng.bit_generator.state
        cand = rng.uniform(0.0, 1.0, (_COLOUR_TRIES, 3))
        d = np.abs(cand[:, 0:1] - others[0])
        np.maximum(d, np.abs(cand[:, 1:2] - others[1]), out=d)
        np.maximum(d, np.abs(cand[:, 2:3] - others[2]), out=d)
        d = d.min(axis=1)
        ok = np.flatnonzero(d >= min_dist)
        if ok.size:
            t = int(ok[0])
            rng.bit_generator.state = state  # put back the draws after the colour taken
            rng.uniform(0.0, 1.0, 3 * (t + 1))
        else:
            t = int(np.argmax(d))  # the first of the farthest
        return cand[t]

    def _generate(self, index: int):
        """-> image float32 [H, W, 3], labels, owner int32 [H, W] (the index of the shape a
        pixel shows, -1 for the background), boxes [(y0, x0, y1, x1)] holding each shape,
        visible pixel counts int64 [K]."""
        rng = np.random.default_rng([self.seed, index])
        h, w = self.image_size
        side = min(h, w)
        bg = rng.uniform(0.0, 1.0, 3)
        n = int(rng.integers(self.min_shapes, self.max_shapes + 1))
        labels: List[int] = []
        boxes: List[Tuple[int, int, int, int]] = []
        visible = np.zeros(n, dtype=np.int64)  # current visible pixels of each kept shape
        least = np.zeros(n, dtype=np.float64)  # the least each may keep
        palette = np.empty((3, n + 1), dtype=np.float64)
        palette[:, 0] = bg
        owner = np.full((h, w), -1, dtype=np.int32)
        image = np.empty((h, w, 3), dtype=np.float32)
        image[:] = bg
        for _ in range(n):
            for _try in range(_TRIES_PER_SHAPE):
                label = int(rng.integers(1, 4))
                s = rng.uniform(*self.size_range) * side
                cx = rng.uniform(s, w - s) if w > 2 * s else w / 2
                cy = rng.uniform(s, h - s) if h > 2 * s else h / 2
                angle = rng.uniform(0.0, 2 * np.pi)
                y0, x0, m = self._shape_crop(label, cx, cy, s, angle)
                area = int(np.count_nonzero(m))
                if area < self.min_area:
                    continue
                y1, x1 = y0 + m.shape[0], x0 + m.shape[1]
                under = owner[y0:y1, x0:x1][m]
                lost = np.bincount(under[under >= 0])  # pixels each earlier shape would lose
                j = lost.shape[0]
                # shapes it does not touch keep what they have, which was checked when they
                # were drawn and after every later shape (min_visible <= 1)
                if np.all(visible[:j] - lost >= least[:j]):
                    break
            else:
                continue
            k = len(labels)
            if k < _ALL_COLOURS:
                others = palette[:, :k + 1]
            else:  # the background and the neighbours: work in proportion to the box, not to k
                near = owner[max(0, y0 - _NEAR):y1 + _NEAR, max(0, x0 - _NEAR):x1 + _NEAR]
                ids = np.unique(near[near >= 0])
                others = palette[:, np.concatenate(([0], ids + 1))]
            colour = self._contrasting(rng, others, 0.35)
            visible[:j] -= lost
            owner[y0:y1, x0:x1][m] = k
            image[y0:y1, x0:x1][m] = colour
            labels.append(label)
            boxes.append((y0, x0, y1, x1))
            visible[k] = area
            least[k] = max(self.min_visible * area, self.min_area)
            palette[:, k + 1] = colour
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        noise *= 0.03
        image += noise
        np.clip(image, 0.0, 1.0, out=image)
        return image, labels, owner, boxes, visible[:len(labels)]

    # ---- items --------------------------------------------------------------------------------

    def __getitem__(self, index: int) -> Tuple[Tensor, Dict[str, Tensor]]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for SyntheticShapes of length {len(self)}")
        image, labels, owner, shape_boxes, visible = self._generate(index)
        h, w = self.image_size
        k = len(labels)
        packed = self.mask_format == "packed"
        masks = None if packed else _lazy_zeros((k, h, w))
        crops, pieces, offset = np.zeros((k, 5), dtype=np.int64), [], 0
        boxes = np.zeros((k, 4), dtype=np.float32)
        for j, (y0, x0, y1, x1) in enumerate(shape_boxes):
            mine = owner[y0:y1, x0:x1] == j
            rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
            boxes[j] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
            if packed:  # the tight crop, straight from the shape's box
                tight = mine[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
                crops[j] = (offset, x0 + cols[0], y0 + rows[0], tight.shape[1], tight.shape[0])
                pieces.append(tight.reshape(-1))
                offset += tight.size
            else:
                masks[j, y0:y1, x0:x1] = mine
        if packed:
            data = np.concatenate(pieces).astype(np.uint8) if pieces else np.zeros(0, dtype=np.uint8)
            target_masks = PackedMasks(torch.from_numpy(data), torch.from_numpy(crops), (h, w))
        else:
            target_masks = torch.from_numpy(masks)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": target_masks,
            "image_id": index,
            "area": torch.from_numpy(visible.astype(np.float32)),
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


def write_synthetic_pngs(out: str, num: int, seed: int, image_size: int = 128, **shapes) -> List[str]:
    """Items 0..num-1 of ``SyntheticShapes(num, image_size, seed=seed, **shapes)`` as 8-bit RGB
    PNG files ``out/shapes_<seed>_<index>.png`` (the images ``--data-seed <seed>`` trains on).
    shapes: SyntheticShapes' keywords (min_shapes, max_shapes, size_range, ...). -> the paths."""
    from PIL import Image

    ds = SyntheticShapes(num, image_size, seed=seed, **shapes)
    os.makedirs(out, exist_ok=True)
    paths = []
    for i in range(num):
        img = ds[i][0]
        arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        path = os.path.join(out, f"shapes_{seed}_{i:04d}.png")
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths
