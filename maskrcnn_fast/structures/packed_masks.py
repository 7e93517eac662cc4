"""PackedMasks: the K instance masks of one image, each kept as its crop inside its box.

torchvision's target format holds every instance mask at full image size (uint8 K x H x W) and
its resize makes float32 copies of all of them. A PackedMasks holds the pixels inside each
instance's box only, so its memory grows with the objects, not with objects x pixels:

- ``data``: uint8 Tensor[D], the crops concatenated, each row-major ``height x width`` bytes
  (the mask's values, 0/1 as a rule; other values are kept as they are).
- ``crops``: int64 Tensor[K, 5], one row per instance: (offset into data, x0, y0, width,
  height) in the SOURCE frame (the mask as loaded). An empty mask has width = height = 0.
- ``size``: (H, W), the source frame.
- ``out_size``: (H', W'), the frame the masks are resized to, lazily. The dense equivalent is
  ``F.interpolate(dense[:, None].float(), size=out_size, mode="nearest")[:, 0].byte()`` (torch's
  nearest rule); equal to ``size`` when never resized.

A resize is recorded, not done (``resize``): the mask targets op
(``maskrcnn_fast.ops.packed_mask_targets``) folds torch's nearest rule into its sampling.
What cannot be folded is done crop by crop on a resized PackedMasks (``materialize``): a flip,
and a second resize (nearest of nearest is not one nearest), so both materialise first; the
memory of that stays proportional to the crops.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..ops.reference.packed_mask_targets import nearest_source_index as _nearest

__all__ = ["PackedMasks", "nearest_source_index"]


def nearest_source_index(out_len: int, in_len: int, device=None) -> Tensor:
    """int64 Tensor[out_len]: the source index torch's ``F.interpolate(mode="nearest")`` (with
    ``size=``, or ``scale_factor`` and ``recompute_scale_factor=True``) reads for each output
    index along one axis (the rule of :func:`maskrcnn_fast.ops.reference.packed_mask_targets`,
    which the op samples with)."""
    i = torch.arange(out_len, dtype=torch.int64, device=device)
    size = torch.tensor([in_len, out_len], dtype=torch.int64, device=device)
    return _nearest(i, size[0], size[1]).clamp_(min=0)


def _frame(value, name: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
        ok = all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or h < 0 or w < 0:
        raise ValueError(f"{name} must be two non-negative integers (height, width), got {value!r}")
    return h, w


def _layout(h: Tensor, w: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Crops of sizes h x w (int64 [K]) packed back to back: their offsets, and for each of the
    D packed elements its instance k, row r and column c (int64 [D] each), and D."""
    n = h * w
    total = int(n.sum()) if n.numel() else 0
    offsets = torch.cumsum(n, 0) - n
    k = torch.repeat_interleave(torch.arange(n.shape[0], device=n.device), n, output_size=total)
    local = torch.arange(total, device=n.device) - offsets[k]
    wk = w[k]
    r = torch.div(local, wk.clamp(min=1), rounding_mode="floor")
    return offsets, k, r, local - r * wk, total


class PackedMasks:
    """K instance masks of one image as crops in their boxes (see the module docstring).

    Args:
        data (Tensor[D], uint8 or bool): the crops, row-major, back to back (bool is stored as uint8).
        crops (Tensor[K, 5], int64): (offset, x0, y0, width, height) of each crop in ``size``.
        size ((H, W)): the source frame.
        out_size ((H', W'), optional): the lazily resized frame; default ``size``.

    Raises ValueError naming the argument (and the row of ``crops``) for a crop outside its
    frame or past the end of ``data``, a negative size, or a wrong shape or dtype.

    Operations: ``from_dense``, ``to_dense``, ``len``, ``shape`` (K, H', W'), ``device``, ``to``,
    ``flip``, ``resize``, ``materialize``, indexing (subsets), ``crop(j)``, ``cat`` (the op's
    inputs for several images), ``instances()`` (the op's rows), ``nbytes``.
    """

    dtype = torch.uint8

    def __init__(self, data: Tensor, crops: Tensor, size: Sequence[int], out_size: Optional[Sequence[int]] = None):
        if not isinstance(data, Tensor) or data.dim() != 1 or data.dtype not in (torch.uint8, torch.bool):
            raise ValueError(f"data must be a uint8 or bool Tensor[D], got "
                             f"{getattr(data, 'dtype', type(data).__name__)} {tuple(getattr(data, 'shape', ()))}")
        if not isinstance(crops, Tensor) or crops.dim() != 2 or crops.shape[1] != 5 or crops.dtype != torch.int64:
            raise ValueError(f"crops must be an int64 Tensor[K, 5] (offset, x0, y0, width, height), got "
                             f"{getattr(crops, 'dtype', type(crops).__name__)} {tuple(getattr(crops, 'shape', ()))}")
        if crops.device != data.device:
            raise ValueError(f"crops is on {crops.device} but data is on {data.device}")
        h, w = _frame(size, "size")
        out = _frame(out_size, "out_size") if out_size is not None else (h, w)
        _check_crops(crops, data.numel(), h, w)
        self._set(data.to(torch.uint8) if data.dtype == torch.bool else data, crops, (h, w), out)

    def _set(self, data: Tensor, crops: Tensor, size, out_size) -> "PackedMasks":
        self.data, self.crops, self.size, self.out_size = data, crops, tuple(size), tuple(out_size)
        return self

    @classmethod
    def _new(cls, data, crops, size, out_size) -> "PackedMasks":
        # internal: arguments known valid (no checks, no device sync)
        return cls.__new__(cls)._set(data, crops, size, out_size)

    # ---- conversions --------------------------------------------------------------------------

    @classmethod
    def from_dense(cls, masks: Tensor) -> "PackedMasks":
        """masks (Tensor[K, H, W], uint8 or bool, any strides) -> their tight crops (an all-zero
        mask becomes an empty crop). Reads the masks in place: no copy of K x H x W."""
        if not isinstance(masks, Tensor) or masks.dim() != 3 or masks.dtype not in (torch.uint8, torch.bool):
            raise ValueError(f"masks must be a uint8 or bool Tensor[K, H, W], got "
                             f"{getattr(masks, 'dtype', type(masks).__name__)} {tuple(getattr(masks, 'shape', ()))}")
        k, h, w = masks.shape
        dev = masks.device
        rows, cols = masks.any(2).bool(), masks.any(1).bool()  # [K, H], [K, W] (uint8's any is uint8)
        has = rows.any(1)
        y0 = rows.to(torch.uint8).argmax(1)  # the first maximum
        y1 = h - rows.flip(1).to(torch.uint8).argmax(1)
        x0 = cols.to(torch.uint8).argmax(1)
        x1 = w - cols.flip(1).to(torch.uint8).argmax(1)
        zero = torch.zeros_like(y0)
        y0, x0 = torch.where(has, y0, zero), torch.where(has, x0, zero)
        ch, cw = torch.where(has, y1 - y0, zero), torch.where(has, x1 - x0, zero)
        offsets, kk, r, c, _ = _layout(ch, cw)
        data = masks[kk, y0[kk] + r, x0[kk] + c].to(torch.uint8)
        crops = torch.stack([offsets, x0, y0, cw, ch], 1) if k else torch.zeros((0, 5), dtype=torch.int64, device=dev)
        return cls._new(data, crops, (h, w), (h, w))

    def materialize(self) -> "PackedMasks":
        """The lazy resize done crop by crop: a PackedMasks whose size is ``out_size`` (itself when
        never resized). Each crop becomes the nearest-resized rows and columns that read it."""
        if self.out_size == self.size:
            return self
        (h, w), (oh, ow) = self.size, self.out_size
        dev = self.data.device
        iy, ix = nearest_source_index(oh, h, dev), nearest_source_index(ow, w, dev)
        off, x0, y0, cw, ch = (v.contiguous() for v in self.crops.unbind(1))
        ry0, ry1 = torch.searchsorted(iy, y0), torch.searchsorted(iy, y0 + ch)
        rx0, rx1 = torch.searchsorted(ix, x0), torch.searchsorted(ix, x0 + cw)
        nh, nw = ry1 - ry0, rx1 - rx0
        empty = (nh <= 0) | (nw <= 0) | (ch == 0) | (cw == 0)
        zero = torch.zeros_like(nh)
        nh, nw = torch.where(empty, zero, nh), torch.where(empty, zero, nw)
        ry0, rx0 = torch.where(empty, zero, ry0), torch.where(empty, zero, rx0)
        offsets, k, r, c, _ = _layout(nh, nw)
        src = off[k] + (iy[ry0[k] + r] - y0[k]) * cw[k] + (ix[rx0[k] + c] - x0[k])
        crops = torch.stack([offsets, rx0, ry0, nw, nh], 1)
        return PackedMasks._new(self.data[src], crops, self.out_size, self.out_size)

    def to_dense(self) -> Tensor:
        """uint8 Tensor[K, H', W']: the masks at full size in the ``out_size`` frame."""
        m = self.materialize()
        k = len(m)
        h, w = m.size
        out = torch.zeros((k, h, w), dtype=torch.uint8, device=m.data.device)
        off, x0, y0, cw, ch = m.crops.unbind(1)
        _, kk, r, c, _ = _layout(ch, cw)
        out.view(-1)[kk * (h * w) + (y0[kk] + r) * w + (x0[kk] + c)] = m.data[off[kk] + r * cw[kk] + c]
        return out

    def crop(self, j: int) -> Tensor:
        """uint8 Tensor[height, width]: instance j's crop in the source frame (at ``crops[j, 1:3]``
        = x0, y0)."""
        off, _, _, cw, ch = (int(v) for v in self.crops[j].tolist())
        return self.data[off:off + cw * ch].view(ch, cw)

    # ---- geometry -----------------------------------------------------------------------------

    def flip(self, dims: Union[int, Sequence[int]] = -1) -> "PackedMasks":
        """Mirrored left-right (``dims=-1``, the default: a mask's ``flip(-1)``) or top-bottom
        (``dims=-2``). A resized PackedMasks materialises its resize first (the flip of the
        resized masks, as a dense mask flipped after its resize)."""
        d = tuple(dims) if isinstance(dims, (list, tuple)) else (dims,)
        if len(d) != 1 or d[0] not in (-1, -2, 1, 2):
            raise ValueError(f"dims must be -1 (left-right) or -2 (top-bottom), got {dims!r}")
        m = self.materialize()
        horizontal = d[0] in (-1, 2)
        off, x0, y0, cw, ch = m.crops.unbind(1)
        offsets, k, r, c, _ = _layout(ch, cw)
        if horizontal:
            src = off[k] + r * cw[k] + (cw[k] - 1 - c)
            x0 = torch.where(cw > 0, m.size[1] - x0 - cw, x0)
        else:
            src = off[k] + (ch[k] - 1 - r) * cw[k] + c
            y0 = torch.where(ch > 0, m.size[0] - y0 - ch, y0)
        crops = torch.stack([offsets, x0, y0, cw, ch], 1)
        return PackedMasks._new(m.data[src], crops, m.size, m.out_size)

    def resize(self, height: int, width: int) -> "PackedMasks":
        """A copy whose masks are nearest-resized to height x width, lazily (only ``out_size``
        changes). A second resize materialises the first (nearest of nearest is not one nearest)."""
        out = _frame((height, width), "(height, width)")
        if out[0] == 0 or out[1] == 0:
            raise ValueError(f"(height, width) must be positive, got {(height, width)}")
        m = self.materialize()
        return PackedMasks._new(m.data, m.crops, m.size, out)

    # ---- container ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    @property
    def shape(self) -> torch.Size:
        """(K, H', W'): the shape of :meth:`to_dense`."""
        return torch.Size((len(self), *self.out_size))

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nbytes(self) -> int:
        """Bytes held: data and crops."""
        return self.data.numel() * self.data.element_size() + self.crops.numel() * self.crops.element_size()

    def to(self, device, non_blocking: bool = False) -> "PackedMasks":
        return PackedMasks._new(self.data.to(device, non_blocking=non_blocking),
                                self.crops.to(device, non_blocking=non_blocking), self.size, self.out_size)

    def pin_memory(self) -> "PackedMasks":
        """Pinned copies (the DataLoader's ``pin_memory=True`` calls this)."""
        return PackedMasks._new(self.data.pin_memory(), self.crops.pin_memory(), self.size, self.out_size)

    def __getitem__(self, index) -> "PackedMasks":
        """A subset (index Tensor or list, bool mask, slice); the data is shared."""
        if isinstance(index, (int, bool)) and not isinstance(index, Tensor):
            raise TypeError("index a PackedMasks with a slice, a list or a Tensor (a subset); "
                            "crop(j) gives one instance's crop")
        if isinstance(index, Tensor) and index.dtype == torch.bool and index.shape != (len(self),):
            raise ValueError(f"a bool index must be Tensor[{len(self)}], got {tuple(index.shape)}")
        if isinstance(index, Tensor):
            index = index.to(self.crops.device)
        crops = self.crops[index]
        if crops.dim() != 2:
            crops = crops.reshape(-1, 5)
        return PackedMasks._new(self.data, crops, self.size, self.out_size)

    def instances(self) -> Tensor:
        """int64 Tensor[K, 9]: (offset, x0, y0, width, height, H, W, H', W') per instance, the
        rows of ``maskrcnn_fast.ops.packed_mask_targets``."""
        frame = torch.tensor([*self.size, *self.out_size], dtype=torch.int64, device=self.crops.device)
        return torch.cat([self.crops, frame.expand(len(self), 4)], 1)

    @staticmethod
    def cat(masks: Sequence["PackedMasks"]) -> Tuple[Tensor, Tensor]:
        """The masks of several images as the op takes them: (data uint8 Tensor[sum D_i],
        instances int64 Tensor[sum K_i, 9]) with each image's offsets shifted into the one
        buffer. Image i's instances are rows ``sum(len(m) for m in masks[:i])`` onwards."""
        masks = list(masks)
        for i, m in enumerate(masks):
            if not isinstance(m, PackedMasks):
                raise ValueError(f"masks[{i}] must be a PackedMasks, got {type(m).__name__}")
        if not masks:
            return torch.zeros(0, dtype=torch.uint8), torch.zeros((0, 9), dtype=torch.int64)
        rows, base = [], 0
        for m in masks:
            inst = m.instances()
            if base:
                inst[:, 0] += base
            rows.append(inst)
            base += m.data.numel()
        return torch.cat([m.data for m in masks]), torch.cat(rows)

    def __repr__(self) -> str:
        h, w = self.size
        rs = "" if self.out_size == self.size else f", resized to {self.out_size[0]}x{self.out_size[1]}"
        return f"PackedMasks({len(self)} masks in {h}x{w}{rs}, {self.nbytes} bytes, device={self.device})"


def _check_crops(crops: Tensor, total: int, h: int, w: int) -> None:
    """ValueError naming the first bad row of crops."""
    if crops.shape[0] == 0:
        return
    off, x0, y0, cw, ch = crops.unbind(1)
    rules = [
        ((cw < 0) | (ch < 0), lambda j, v: f"crops row {j}: negative width or height {v[3]} x {v[4]}"),
        ((x0 < 0) | (y0 < 0) | (x0 + cw > w) | (y0 + ch > h),
         lambda j, v: f"crops row {j}: crop (x0, y0, width, height) = ({v[1]}, {v[2]}, {v[3]}, {v[4]}) outside "
                      f"the {w} x {h} (width x height) frame of size"),
        ((off < 0) | (off + cw * ch > total),
         lambda j, v: f"crops row {j}: offset {v[0]} + {v[3]} x {v[4]} bytes is outside data ({total} bytes)"),
    ]
    for bad, msg in rules:
        if bool(bad.any()):
            j = int(torch.nonzero(bad)[0])
            raise ValueError(msg(j, crops[j].tolist()))
