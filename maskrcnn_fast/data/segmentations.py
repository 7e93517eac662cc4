"""COCO segmentations (polygons, uncompressed or compressed RLE) decoded straight to the crop of
the instance's mask, never to a full-size mask.

Every form goes through COCO's run lengths over the whole image (column-major, starting with
zeros): a polygon is rasterised by pycocotools in the image's own frame (so the crop is exactly
the crop of pycocotools' full-image decode: a polygon moved into its box's frame would be
rounded differently), an RLE is read as it is (compressed strings are decoded here, without
pycocotools). The runs are then walked into the columns they cover: the cost and the memory
grow with the runs and the crop, not with the image.
"""
from typing import Any, List, Optional, Tuple

import numpy as np

from .cocoapi import pycocotools

__all__ = ["crop_from_rle_counts", "decode_segmentation_crop", "rle_counts", "rle_string_counts", "usable_polygons"]


def usable_polygons(segm: list) -> List[list]:
    """The polygons pycocotools can rasterise: at least 3 points (6 numbers), an even count.
    The others are skipped (the documented rule of :class:`CocoDetection`)."""
    return [p for p in segm if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0]


def rle_string_counts(counts: bytes) -> np.ndarray:
    """COCO's compressed RLE string (pycocotools' rleToString form) -> int64 run lengths."""
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (c < 0).any() or (c > 63).any():
        raise ValueError("compressed RLE counts hold a character outside COCO's alphabet ('0' .. 'o')")
    last = np.flatnonzero((c & 0x20) == 0)  # the last character of each value
    if last.size == 0 or last[-1] != c.size - 1:
        raise ValueError("compressed RLE counts end inside a value")
    first = np.concatenate(([0], last[:-1] + 1))
    group = np.repeat(np.arange(last.size), last - first + 1)
    k = np.arange(c.size) - first[group]
    if k.max() > 11:
        raise ValueError("compressed RLE counts hold a value of more than 60 bits")
    vals = np.add.reduceat((c & 0x1F) << (5 * k), first)
    negative = (c[last] & 0x10) != 0
    vals = np.where(negative, vals - (np.int64(1) << (5 * (last - first + 1))), vals)
    out = vals.copy()
    # from the fourth value on, each is a difference to the value two before it
    out[1::2] = np.cumsum(vals[1::2])
    out[2::2] = np.cumsum(vals[2::2])
    return out


def rle_counts(segm: Any, height: int, width: int) -> Optional[np.ndarray]:
    """A COCO ``segmentation`` -> its int64 run lengths over the height x width image (None:
    no usable polygon, an empty mask). Polygons need pycocotools (raises ImportError naming it
    otherwise); RLEs do not. Raises ValueError for an RLE of another size, counts that do not
    cover the image exactly or are negative, or a segmentation of another form."""
    if isinstance(segm, list):
        polys = usable_polygons(segm)
        if not polys:
            return None
        mask_utils = pycocotools("decoding a COCO polygon segmentation").mask
        rle = mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in polys], height, width))
        counts = rle_string_counts(rle["counts"])
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and [int(s) for s in size] == [height, width]):
            raise ValueError(f"segmentation RLE size {size!r} does not match the image ({height}, {width})")
        raw = segm["counts"]
        if isinstance(raw, (list, tuple)):
            counts = np.asarray(raw, dtype=np.int64).reshape(-1)
        elif isinstance(raw, (str, bytes)):
            counts = rle_string_counts(raw.encode() if isinstance(raw, str) else raw)
        else:
            raise ValueError(f"segmentation RLE counts must be a list or a string, got {type(raw).__name__}")
    else:
        raise ValueError(f"unsupported segmentation of type {type(segm).__name__} (polygons or RLE expected)")
    if (counts < 0).any():
        raise ValueError("segmentation RLE has negative counts")
    if int(counts.sum()) != height * width:
        raise ValueError(f"segmentation RLE counts cover {int(counts.sum())} pixels, not the image's "
                         f"{height} x {width} = {height * width}")
    return counts


def crop_from_rle_counts(counts: Optional[np.ndarray], height: int, width: int) -> Tuple[int, int, np.ndarray]:
    """Run lengths over a height x width image (column-major, zeros first) -> (x0, y0, the tight
    crop uint8 [h, w]) of the mask; an empty mask gives (0, 0, a 0 x 0 crop)."""
    empty = (0, 0, np.zeros((0, 0), dtype=np.uint8))
    if counts is None or counts.size < 2:
        return empty
    ends = np.cumsum(counts)
    starts = ends - counts
    s, e = starts[1::2], ends[1::2]  # the runs of ones
    keep = e > s
    s, e = s[keep], e[keep]
    if s.size == 0:
        return empty
    # each run split into the columns it covers: (column, first row, row after the last)
    c_first, c_last = s // height, (e - 1) // height
    n = c_last - c_first + 1
    run = np.repeat(np.arange(s.size), n)
    j = np.arange(run.size) - np.repeat(np.cumsum(n) - n, n)
    col = c_first[run] + j
    ya = np.maximum(s[run] - col * height, 0)
    yb = np.minimum(e[run] - col * height, height)
    x0, x1 = int(col.min()), int(col.max()) + 1
    y0, y1 = int(ya.min()), int(yb.max())
    # +1 where a segment starts, -1 after it ends, summed down each column
    edges = np.zeros((x1 - x0, y1 - y0 + 1), dtype=np.int32)
    np.add.at(edges, (col - x0, ya - y0), 1)
    np.add.at(edges, (col - x0, yb - y0), -1)
    crop = np.ascontiguousarray(np.cumsum(edges, axis=1)[:, :-1].T).astype(np.uint8)
    return x0, y0, crop


def decode_segmentation_crop(segm: Any, height: int, width: int) -> Tuple[int, int, np.ndarray]:
    """A COCO ``segmentation`` -> (x0, y0, uint8 crop [h, w]): the tight crop of exactly the mask
    :func:`maskrcnn_fast.data.coco.decode_segmentation` gives at full size (polygons of fewer than
    3 points skipped; none left, or no pixel set: an empty 0 x 0 crop at (0, 0))."""
    return crop_from_rle_counts(rle_counts(segm, height, width), height, width)
