"""Pure-PyTorch ROIAlign: the float64 oracle of the tests (values and, through autograd, gradients)
and the "torch" path of the benchmarks.

Vectorised over ROIs, bins and samples. The bilinear sampling is a weighted gather: every sample
of every bin names the four feature-map pixels it reads and their weights, and
``F.embedding_bag(mode="sum")`` over the channels-last map ``[N*H*W, C]`` adds them up without
materialising a ``[K, C, bins, samples]`` tensor. Its backward (an index-add into the map) is the
gradient oracle. ROIs are grouped by their sampling grid (one group when ``sampling_ratio > 0``) and
each group is cut into chunks of (ROI, bin) pairs so that memory stays bounded for any box size.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["roi_align"]

# Upper bound on gathered (sample, corner) entries per embedding_bag call: about 16 MB of
# indices and weights in float64.
_CHUNK_ENTRIES = 1 << 20
# Same cap as csrc/common/roi_align_math.h: an adaptive grid stops growing here.
_MAX_ADAPTIVE_GRID = 1024


def _to_rois(boxes, dtype, device):
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.size(1) != 5:
            raise ValueError(f"boxes must be Tensor[K, 5], got shape {tuple(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise ValueError("boxes must be a Tensor[K, 5] or a list of Tensor[L, 4]")
    parts = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.size(1) != 4:
            raise ValueError(f"boxes[{i}] must be Tensor[L, 4], got shape {tuple(b.shape)}")
        parts.append(torch.cat([torch.full_like(b[:, :1], i), b], dim=1))
    if not parts:
        return torch.empty(0, 5, dtype=dtype, device=device)
    return torch.cat(parts, dim=0)


def _axis(start, bin_size, p, grid, size):
    """Sample positions along one axis and their bilinear corners.

    start, bin_size, p: [U] (ROI start, bin size, bin index of each unit); grid: samples per bin.
    Returns low, high (long [U, grid]), w_low, w_high ([U, grid]) and valid (bool [U, grid]).
    """
    i = torch.arange(grid, device=start.device, dtype=start.dtype)
    # torchvision's order: start + p * bin + (i + 0.5) * bin / grid
    pos = (start + p.to(start.dtype) * bin_size)[:, None] + (i + 0.5)[None, :] * bin_size[:, None] / grid
    valid = (pos >= -1) & (pos <= size)  # NaN compares false: invalid
    pos = torch.where(valid, pos, torch.zeros_like(pos)).clamp(min=0)
    low = pos.to(torch.long)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(pos.dtype), pos)
    w_high = pos - low.to(pos.dtype)
    w_low = 1.0 - w_high
    return low, high, w_low, w_high, valid


def _pool_group(table, hw, rois, geom, grid_h, grid_w, ph_n, pw_n):
    """Pools the ROIs of one group (same grid). Returns [G * PH * PW, C] in table's dtype."""
    start_h, start_w, bin_h, bin_w, base, count = geom
    n_bins = ph_n * pw_n
    units = rois * n_bins
    per_unit = grid_h * grid_w * 4
    step = max(1, _CHUNK_ENTRIES // per_unit)
    out = []
    for u0 in range(0, units, step):
        u = torch.arange(u0, min(u0 + step, units), device=table.device)
        r = u // n_bins
        ph = (u // pw_n) % ph_n
        pw = u % pw_n
        height, width = hw
        y0, y1, wy0, wy1, vy = _axis(start_h[r], bin_h[r], ph, grid_h, height)
        x0, x1, wx0, wx1, vx = _axis(start_w[r], bin_w[r], pw, grid_w, width)
        b = base[r][:, None, None]
        ys = torch.stack([y0, y0, y1, y1], -1)[:, :, None, :]  # [U, gh, 1, 4]
        xs = torch.stack([x0, x1, x0, x1], -1)[:, None, :, :]  # [U, 1, gw, 4]
        idx = b[..., None] + ys * width + xs  # [U, gh, gw, 4]
        wy = torch.stack([wy0, wy0, wy1, wy1], -1)[:, :, None, :]
        wx = torch.stack([wx0, wx1, wx0, wx1], -1)[:, None, :, :]
        w = wy * wx  # w1 = hy * hx, w2 = hy * lx, w3 = ly * hx, w4 = ly * lx
        valid = (vy[:, :, None] & vx[:, None, :])[..., None]
        w = torch.where(valid, w, torch.zeros_like(w))
        summed = F.embedding_bag(
            idx.reshape(idx.size(0), -1),
            table,
            per_sample_weights=w.reshape(w.size(0), -1).to(table.dtype),
            mode="sum",
        )
        out.append(summed / count[r][:, None].to(summed.dtype))
    return torch.cat(out, 0)


def roi_align(
    input: Tensor,
    boxes,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """ROIAlign (average pooling), same arguments and results as ``torchvision.ops.roi_align``.

    Args:
        input (Tensor[N, C, H, W]): feature maps, any floating dtype (half and bfloat16 are
            computed in float32).
        boxes (Tensor[K, 5] or list of Tensor[L, 4]): (batch index, x1, y1, x2, y2) in input
            pixels, or one (x1, y1, x2, y2) tensor per image.
        output_size (int or (int, int)): (PH, PW) bins.
        spatial_scale (float): feature-map pixels per input pixel.
        sampling_ratio (int): samples per bin side; <= 0: ceil(bin size), capped at 1024.
        aligned (bool): shift boxes by -0.5 px (pixel-centre convention).

    Returns:
        Tensor[K, C, PH, PW]. A ROI with a non-finite coordinate, or whose batch index is not an
        integer in [0, N), gives zeros. Differentiable with respect to ``input``.
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    ph_n, pw_n = int(output_size[0]), int(output_size[1])
    rois = _to_rois(boxes, input.dtype, input.device).detach()
    n, c, height, width = input.shape
    k = rois.size(0)
    cdt = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    out_dtype = input.dtype
    rois = rois.to(cdt)
    if k == 0 or n * height * width == 0 or c == 0:
        return input.new_zeros((k, c, ph_n, pw_n)) + 0 * input.sum()

    batch = rois[:, 0]
    x1, y1, x2, y2 = (rois[:, i] for i in range(1, 5))
    finite = torch.isfinite(rois[:, 1:]).all(1)
    b_ok = torch.isfinite(batch) & (batch == torch.trunc(batch)) & (batch >= 0) & (batch < n)
    offset = 0.5 if aligned else 0.0
    start_w = x1 * spatial_scale - offset
    start_h = y1 * spatial_scale - offset
    roi_w = (x2 * spatial_scale - offset) - start_w
    roi_h = (y2 * spatial_scale - offset) - start_h
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    # Finite corners can still overflow once scaled (inf - inf would make NaN samples).
    finite = finite & torch.isfinite(roi_w) & torch.isfinite(roi_h)
    bin_h = roi_h / ph_n
    bin_w = roi_w / pw_n
    if sampling_ratio > 0:
        gh = torch.full((k,), sampling_ratio, dtype=torch.long, device=rois.device)
        gw = gh.clone()
    else:
        cap = float(_MAX_ADAPTIVE_GRID)
        gh = torch.where(finite, torch.ceil(roi_h / ph_n), 0).clamp(0, cap).to(torch.long)
        gw = torch.where(finite, torch.ceil(roi_w / pw_n), 0).clamp(0, cap).to(torch.long)
    usable = finite & b_ok & (gh > 0) & (gw > 0)
    gh = torch.where(usable, gh, 0)
    gw = torch.where(usable, gw, 0)
    count = (gh * gw).clamp(min=1).to(cdt)
    base = torch.where(b_ok, batch, 0).to(torch.long) * (height * width)
    zero = torch.zeros_like(start_h)
    start_h, start_w = torch.where(usable, start_h, zero), torch.where(usable, start_w, zero)
    bin_h, bin_w = torch.where(usable, bin_h, zero), torch.where(usable, bin_w, zero)

    table = input.to(cdt).permute(0, 2, 3, 1).reshape(n * height * width, c)
    pieces, order = [], []
    keys = gh * (_MAX_ADAPTIVE_GRID + 1) + gw
    for key in torch.unique(keys[usable]).tolist():
        sel = torch.nonzero(usable & (keys == key)).flatten()
        g_h, g_w = divmod(int(key), _MAX_ADAPTIVE_GRID + 1)
        geom = (start_h[sel], start_w[sel], bin_h[sel], bin_w[sel], base[sel], count[sel])
        pooled = _pool_group(table, (height, width), sel.numel(), geom, g_h, g_w, ph_n, pw_n)
        pieces.append(pooled.view(sel.numel(), ph_n, pw_n, c))
        order.append(sel)
    empty = torch.nonzero(~usable).flatten()
    if empty.numel():
        # `+ table[:0].sum()` (an exact 0 that reads no value, so NaN-safe) keeps the output
        # in input's graph when every ROI is empty: backward then gives zeros, not an error.
        pieces.append(table.new_zeros((empty.numel(), ph_n, pw_n, c)) + table[:0].sum())
        order.append(empty)
    order = torch.cat(order)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(k, device=order.device)
    out = torch.cat(pieces, 0).index_select(0, inverse)
    return out.permute(0, 3, 1, 2).contiguous().to(out_dtype)
