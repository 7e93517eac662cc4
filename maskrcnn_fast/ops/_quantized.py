"""QuantizedCPU kernels of torch.ops.maskrcnn_fast.roi_align, nms and batched_nms: torchvision's
answers on quantized (quint8, qint8, qint32) tensors.

roi_align: torchvision's ``qroi_align`` step for step, in float32 tensor arithmetic (each torch
op rounds as the C++ float expression it stands for, so the result is bit for bit
torchvision's): the ROIs dequantized (``(q - zero_point) * scale`` in float32), the bilinear
weights of each sample computed as torchvision's ``pre_calc_for_bilinear_interpolate`` does, the
weighted integer representations summed sample by sample (``w1 q1 + w2 q2 + w3 q3 + w4 q4``,
left to right) together with the sum of the weights, then dequantized once
(``scale * (sum - zero_point * sum_w) / count``) and requantized with the input's scale and zero
point (``zero_point + nearbyint(v / scale)``, clamped to the type's range). A sample outside the
map adds 0 (not the zero point), as in torchvision. torchvision takes one image only and reads
no batch index; with several images the batch index is used here, and must dequantize to an
integer in [0, N).

nms / batched_nms: torchvision's ``qnms`` works on the integer representations (the scale and
the zero point cancel out of the IoU) in float32, which is what our float32 kernel computes
on the integer representations converted to float32 (exact while they are below 2**24; areas
too, i.e. for quint8 / qint8 always). torchvision's ``batched_nms`` fails on quantized tensors;
here it gives the per-class ``nms``.
"""
import torch
from torch import Tensor

_LIB = None


def _dequantized_rois(rois: Tensor) -> Tensor:
    if rois.is_quantized:
        # float32 (q - zero_point) * scale, as torchvision's qroi_align reads them
        return rois.dequantize()
    return rois.to(torch.float32)


def _batch_index(rois: Tensor, n: int) -> Tensor:
    k = rois.shape[0]
    if n == 1:  # torchvision's qroi_align: always image 0, whatever the first column holds
        return torch.zeros(k, dtype=torch.int64)
    idx = rois[:, 0]
    bad = ~((idx == idx.floor()) & (idx >= 0) & (idx < n))
    if bool(bad.any()):
        j = int(torch.nonzero(bad)[0, 0])
        raise RuntimeError(
            f"roi_align: rois[{j}, 0] = {float(idx[j])} (dequantized) is not a batch index in [0, {n})"
        )
    return idx.to(torch.int64)


def qroi_align(
    input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
    sampling_ratio: int, aligned: bool,
) -> Tensor:
    if input.qscheme() != torch.per_tensor_affine:
        raise RuntimeError(f"roi_align: quantized input must be per-tensor affine, got {input.qscheme()}")
    if input.dim() != 4:
        raise RuntimeError(f"roi_align: input must be Tensor[N, C, H, W], got shape {list(input.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise RuntimeError(f"roi_align: rois must be Tensor[K, 5], got shape {list(rois.shape)}")
    f32 = torch.float32
    q = input.int_repr()
    n, c, h, w = q.shape
    ph, pw = int(pooled_height), int(pooled_width)
    r = _dequantized_rois(rois)
    k = r.shape[0]
    out_q = torch.empty((k, c, ph, pw), dtype=q.dtype)
    if out_q.numel() == 0:
        return torch._make_per_tensor_quantized_tensor(out_q, input.q_scale(), input.q_zero_point())
    bidx = _batch_index(r, n)

    ss = torch.tensor(spatial_scale, dtype=f32)
    offset = torch.tensor(0.5 if aligned else 0.0, dtype=f32)
    x1 = r[:, 1] * ss - offset
    y1 = r[:, 2] * ss - offset
    rw = (r[:, 3] * ss - offset) - x1
    rh = (r[:, 4] * ss - offset) - y1
    if not aligned:  # malformed ROIs forced to 1x1
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bin_h, bin_w = rh / ph, rw / pw
    if sampling_ratio > 0:
        grid_h = torch.full((k,), sampling_ratio, dtype=torch.int64)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(rh / ph).to(torch.int64)
        grid_w = torch.ceil(rw / pw).to(torch.int64)
    count = (grid_h * grid_w).clamp(min=1).to(f32)
    gh_f, gw_f = grid_h.to(f32), grid_w.to(f32)

    flat = q.reshape(-1).to(f32)  # exact for every quantized integer type below 2**24
    plane = (bidx[:, None] * c + torch.arange(c)[None, :]) * (h * w)  # [K, C] plane offsets
    ys = torch.arange(ph, dtype=f32)[None, :] * bin_h[:, None]  # [K, PH]: ph * bin_size_h
    xs = torch.arange(pw, dtype=f32)[None, :] * bin_w[:, None]
    acc = torch.zeros((k, c, ph, pw), dtype=f32)
    sum_w = torch.zeros((k, 1, ph, pw), dtype=f32)
    zeros = torch.zeros((k, ph, pw), dtype=f32)
    for iy in range(int(grid_h.max())):
        # yy = roi_start_h + ph * bin_size_h + (iy + .5f) * bin_size_h / roi_bin_grid_h
        yy = (y1[:, None] + ys) + (float(iy + 0.5) * bin_h / gh_f)[:, None]  # [K, PH]
        for ix in range(int(grid_w.max())):
            xx = (x1[:, None] + xs) + (float(ix + 0.5) * bin_w / gw_f)[:, None]  # [K, PW]
            y = yy[:, :, None].expand(k, ph, pw)
            x = xx[:, None, :].expand(k, ph, pw)
            # samples past this ROI's grid, or more than a pixel outside the map, weigh 0
            live = ((iy < grid_h) & (ix < grid_w))[:, None, None] & (y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)
            y = torch.where(y <= 0, zeros, y)
            x = torch.where(x <= 0, zeros, x)
            y_low, x_low = y.to(torch.int64), x.to(torch.int64)
            y_edge, x_edge = y_low >= h - 1, x_low >= w - 1
            y_high = torch.where(y_edge, h - 1, y_low + 1)
            x_high = torch.where(x_edge, w - 1, x_low + 1)
            y_low = torch.where(y_edge, h - 1, y_low)
            x_low = torch.where(x_edge, w - 1, x_low)
            y = torch.where(y_edge, y_low.to(f32), y)
            x = torch.where(x_edge, x_low.to(f32), x)
            ly, lx = y - y_low.to(f32), x - x_low.to(f32)
            hy, hx = 1.0 - ly, 1.0 - lx
            ws = [torch.where(live, a, zeros) for a in (hy * hx, hy * lx, ly * hx, ly * lx)]
            pos = [torch.where(live, yy_ * w + xx_, 0) for yy_, xx_ in
                   ((y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high))]
            v = None
            for wt, p in zip(ws, pos):
                term = wt[:, None] * flat[plane[:, :, None, None] + p[:, None]]
                v = term if v is None else v + term
            acc = acc + v
            sum_w = sum_w + (((ws[0] + ws[1]) + ws[2]) + ws[3])[:, None]
    scale = torch.tensor(input.q_scale(), dtype=f32)
    zp = input.q_zero_point()
    value = scale * (acc - torch.tensor(float(zp), dtype=f32) * sum_w) / count[:, None, None, None]
    requant = (torch.tensor(float(zp), dtype=f32) + torch.round(value * (1.0 / scale))).to(torch.int64)
    info = torch.iinfo(q.dtype)
    out_q = requant.clamp(info.min, info.max).to(q.dtype)
    return torch._make_per_tensor_quantized_tensor(out_q, input.q_scale(), zp)


def _int_repr_float(t: Tensor) -> Tensor:
    return t.int_repr().to(torch.float32) if t.is_quantized else t.to(torch.float32)


def qnms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    if boxes.is_quantized and scores.is_quantized and boxes.dtype != scores.dtype:
        raise RuntimeError(f"nms: boxes and scores must have the same dtype, got {boxes.dtype} and {scores.dtype}")
    return torch.ops.maskrcnn_fast.nms(_int_repr_float(boxes), _int_repr_float(scores), iou_threshold)


def qbatched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    if boxes.is_quantized and scores.is_quantized and boxes.dtype != scores.dtype:
        raise RuntimeError(
            f"batched_nms: boxes and scores must have the same dtype, got {boxes.dtype} and {scores.dtype}"
        )
    return torch.ops.maskrcnn_fast.batched_nms(
        _int_repr_float(boxes), _int_repr_float(scores), idxs, iou_threshold
    )


def register() -> None:
    global _LIB
    if _LIB is not None:
        return
    lib = torch.library.Library("maskrcnn_fast", "IMPL")
    lib.impl("roi_align", qroi_align, "QuantizedCPU")
    lib.impl("nms", qnms, "QuantizedCPU")
    lib.impl("batched_nms", qbatched_nms, "QuantizedCPU")
    _LIB = lib
