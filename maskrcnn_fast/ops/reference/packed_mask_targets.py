"""Pure-PyTorch mask targets from packed instance masks (each mask stored as its crop inside its
box), the nearest resize of the masks folded in: the float64 oracle of the tests and the "torch"
path of the benchmarks and of the model.

The same separable form as :mod:`.mask_targets`' reference (``Ay @ window @ Ax.T / count``), where
the window is the part of the RESIZED mask the box's samples can touch, built straight from the
crop: resized row ``r`` is source row ``nearest(r, H, H')`` (torch's nearest rule, in float32 as
ATen computes it), which is crop row ``that - y0`` inside the crop and a row of zeros outside
(columns likewise). Only these per-box windows are materialised (in chunks of bounded memory),
never a K x H' x W' tensor.
"""
import torch
from torch import Tensor

from .mask_targets import _CHUNK_ELEMENTS, _MAX_ADAPTIVE_GRID, _axis_matrix, _window

__all__ = ["packed_mask_targets", "nearest_source_index"]

_COLUMNS = ("offset", "x0", "y0", "width", "height", "H", "W", "H'", "W'")
_INT32_MAX = 2 ** 31 - 1


def nearest_source_index(i: Tensor, size_in: Tensor, size_out: Tensor) -> Tensor:
    """The source index (int64) that output index ``i`` of a resize from ``size_in`` to
    ``size_out`` pixels reads under torch's "nearest" rule (F.interpolate(size=...)): ``i`` when
    the sizes are equal, ``i >> 1`` when doubled, else floor(i * (in / out)) in float32, at most
    in - 1. Broadcasts."""
    i, size_in, size_out = torch.broadcast_tensors(i, size_in, size_out)
    scale = size_in.to(torch.float32) / size_out.to(torch.float32).clamp(min=1)
    general = torch.floor(i.to(torch.float32) * scale).to(torch.int64)
    general = torch.minimum(general, size_in - 1)
    return torch.where(size_out == size_in, i, torch.where(size_out == 2 * size_in, i >> 1, general))


def _check_instances(instances: Tensor, data_size: int) -> None:
    if instances.dim() != 2 or instances.shape[1] != 9:
        raise ValueError(f"instances must be Tensor[N, 9], got shape {tuple(instances.shape)}")
    off, x0, y0, w, h, sh, sw, oh, ow = instances.unbind(1)
    frames = instances[:, 5:]
    checks = [
        (((frames < 0) | (frames > _INT32_MAX)).any(1), "the frame sizes (H, W, H', W') must be in [0, 2^31)"),
        ((w < 0) | (h < 0), "negative crop size (width, height)"),
        ((x0 < 0) | (y0 < 0) | (w > sw - x0) | (h > sh - y0), "crop (x0, y0, w, h) outside its (W x H) source frame"),
        ((off < 0) | (off > data_size) | (w * h > data_size - off), f"crop bytes outside data ({data_size} bytes)"),
    ]
    for bad, what in checks:
        if bool(bad.any()):
            n = int(torch.nonzero(bad)[0, 0])
            row = dict(zip(_COLUMNS, instances[n].tolist()))
            raise ValueError(f"instances row {n}: {what}: {row}")


def packed_mask_targets(data: Tensor, instances: Tensor, boxes: Tensor, instance_index: Tensor, M: int) -> Tensor:
    """The arguments and result of :func:`maskrcnn_fast.ops.packed_mask_targets`.

    Args:
        data (Tensor[D], uint8 or bool): the crops, concatenated, each row-major height x width.
        instances (Tensor[N, 9], int64): (offset, x0, y0, width, height, H, W, H', W') per row.
        boxes (Tensor[K, 4]): x1, y1, x2, y2 in the resized frame of each box's instance.
        instance_index (Tensor[K], int64): the instances row of each box.
        M (int): output size.

    Returns:
        Tensor[K, M, M] in boxes' dtype (computed in float64 for float64 boxes, else float32).
        A box with a non-finite coordinate gives zeros; a bad instances row or an index out of
        range raises ValueError naming the argument.
    """
    m = int(M)
    if m <= 0:
        raise ValueError(f"M must be positive, got {M}")
    if data.dim() != 1:
        raise ValueError(f"data must be Tensor[D], got shape {tuple(data.shape)}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be Tensor[K, 4], got shape {tuple(boxes.shape)}")
    out_dtype = boxes.dtype
    cdt = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    device = boxes.device
    k = boxes.shape[0]
    instances = instances.to(device=device, dtype=torch.int64)
    instance_index = instance_index.to(device=device, dtype=torch.int64)
    _check_instances(instances, data.numel())
    if instance_index.shape != (k,):
        raise ValueError(f"instance_index must be Tensor[K] (K = {k}), got shape {tuple(instance_index.shape)}")
    n_rows = instances.shape[0]
    if k and bool(((instance_index < 0) | (instance_index >= n_rows)).any()):
        raise ValueError(f"instance_index must be in [0, {n_rows}) (a row of instances)")
    out = torch.zeros((k, m, m), dtype=cdt, device=device)
    if k == 0:
        return out.to(out_dtype)
    flat = data.reshape(-1).to(device=device, dtype=torch.uint8)
    rows = instances[instance_index]
    off, cx0, cy0, cw, ch, sh, sw, h, w = rows.unbind(1)  # h, w: the resized frame

    b = boxes.to(cdt)
    x1, y1, x2, y2 = b.unbind(1)
    roi_w = (x2 - x1).clamp(min=1.0)  # aligned=False: boxes under a pixel count as one
    roi_h = (y2 - y1).clamp(min=1.0)
    finite = torch.isfinite(b).all(1) & torch.isfinite(roi_w) & torch.isfinite(roi_h)
    bin_w, bin_h = roi_w / m, roi_h / m
    cap = float(_MAX_ADAPTIVE_GRID)
    gh = torch.where(finite, torch.ceil(bin_h), 0).clamp(0, cap).to(torch.int64)
    gw = torch.where(finite, torch.ceil(bin_w), 0).clamp(0, cap).to(torch.int64)
    usable = finite & (gh > 0) & (gw > 0) & (h > 0) & (w > 0) & (cw > 0) & (ch > 0)
    zero = torch.zeros_like(x1)
    x1, y1 = torch.where(usable, x1, zero), torch.where(usable, y1, zero)
    roi_w, roi_h = torch.where(usable, roi_w, zero + 1), torch.where(usable, roi_h, zero + 1)
    bin_w, bin_h = roi_w / m, roi_h / m
    row0, nrows = _window(y1, roi_h, h.clamp(min=1))
    col0, ncols = _window(x1, roi_w, w.clamp(min=1))
    count = (gh * gw).clamp(min=1).to(cdt)

    mine = torch.nonzero(usable).flatten()
    cost = nrows[mine] * ncols[mine] + m * (gh + gw + nrows + ncols)[mine]
    cost, order = cost.sort(descending=True)
    mine, costs = mine[order], cost.tolist()
    start = 0
    while start < len(costs):
        n = max(1, _CHUNK_ELEMENTS // max(1, int(costs[start])))
        sel = mine[start:start + n]
        start += n
        ly, lx = int(nrows[sel].max()), int(ncols[sel].max())
        ay = _axis_matrix(y1[sel], bin_h[sel], gh[sel], h[sel], row0[sel], m, int(gh[sel].max()), ly)
        ax = _axis_matrix(x1[sel], bin_w[sel], gw[sel], w[sel], col0[sel], m, int(gw[sel].max()), lx)
        # The window's resized rows and columns (those past a box's window have zero weight:
        # clamped into the frame), their source rows and columns, and those in the crop.
        r = torch.minimum(row0[sel, None] + torch.arange(ly, device=device), h[sel, None] - 1)
        c = torch.minimum(col0[sel, None] + torch.arange(lx, device=device), w[sel, None] - 1)
        cy = nearest_source_index(r, sh[sel, None], h[sel, None]) - cy0[sel, None]
        cx = nearest_source_index(c, sw[sel, None], w[sel, None]) - cx0[sel, None]
        in_y = (cy >= 0) & (cy < ch[sel, None])
        in_x = (cx >= 0) & (cx < cw[sel, None])
        at = off[sel, None, None] + cy.clamp(min=0)[:, :, None] * cw[sel, None, None] + cx.clamp(min=0)[:, None, :]
        inside = in_y[:, :, None] & in_x[:, None, :]
        # (a usable box's crop is not empty, so data has bytes to read)
        window = torch.where(inside, flat[torch.where(inside, at, 0)], torch.zeros((), dtype=torch.uint8, device=device))
        out[sel] = torch.bmm(torch.bmm(ay, window.to(cdt)), ax.transpose(1, 2)) / count[sel, None, None]
    return out.to(out_dtype)
