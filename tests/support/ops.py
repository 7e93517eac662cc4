"""Inputs and oracles shared by the op tests: tests/test_<op>.py, the op's emulated-vs-CPU cases
in tests/test_cuda_matches_cpu.py, tests/fuzz/test_fuzz_<op>.py and the drop-in tests
(tests/test_dropin.py)."""
import math

import torch
import torchvision
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator


# ---- boxes (nms, box_iou, match_boxes) ------------------------------------------------------

IMAGE_H, IMAGE_W = 800, 1088  # an R50-FPN input


def random_boxes(n, device="cpu", dtype=torch.float32, integer=False):
    """Boxes of 8 to 440 pixels a side (log-uniform) anywhere in an 800x1088 image (most survive
    NMS), drawn in float64; rounded to integers when ``integer``."""
    cx = torch.rand(n, dtype=torch.float64) * IMAGE_W
    cy = torch.rand(n, dtype=torch.float64) * IMAGE_H
    w = torch.exp(torch.rand(n, dtype=torch.float64) * 4) * 8
    h = torch.exp(torch.rand(n, dtype=torch.float64) * 4) * 8
    b = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    if integer:
        b = b.round()
    return b.to(dtype).to(device)


def grid_boxes(n, step, cells=16, min_cells=0, device="cpu", dtype=torch.float32):
    """Boxes on a coarse integer grid of ``step`` px (corners at cell 0..cells-1, sides of
    min_cells..7 cells): many exact IoU ties and shared edges."""
    xy = torch.randint(0, cells, (n, 2)).double() * step
    wh = torch.randint(min_cells, 8, (n, 2)).double() * step
    return torch.cat([xy, xy + wh], 1).to(dtype).to(device)


def boxes_in_square(n, size=200.0, device="cpu", dtype=torch.float32):
    """n boxes of 4 .. size/2 pixels a side inside a size x size image."""
    xy = torch.rand(n, 2) * size * 0.8
    wh = 4 + torch.rand(n, 2) * size / 2
    return torch.cat([xy, xy + wh], 1).to(device=device, dtype=dtype)


def distinct_scores(n, device="cpu", dtype=torch.float32):
    """n distinct scores, exactly representable in float16 and bfloat16 (integers below 256
    over 256): NMS orders them the same in every dtype, without ties."""
    assert n <= 256
    return (torch.randperm(256)[:n].double() / 256).to(device=device, dtype=dtype)


# ---- roi_align -------------------------------------------------------------------------------

def random_rois(k, n, height, width, scale, dtype=torch.float32, device="cpu"):
    """[K, 5] ROIs in input pixels over a map of height x width (feature pixels): mostly inside,
    some partly or wholly outside, some smaller than a feature pixel."""
    h, w = height / scale, width / scale
    xy = torch.rand(k, 2) * torch.tensor([w, h]) * 1.3 - torch.tensor([w, h]) * 0.15
    wh = torch.rand(k, 2) * torch.tensor([w, h]) * 0.6
    wh[: k // 4] *= 0.02  # sub-pixel boxes
    b = torch.randint(0, n, (k, 1)).float()
    return torch.cat([b, xy, xy + wh], 1).to(dtype=dtype, device=device)


# ---- drop-in for torchvision: autocast, quantized tensors -------------------------------------

LOW_DTYPES = [torch.bfloat16, torch.float16]  # autocast's
QDTYPES = [torch.quint8, torch.qint8, torch.qint32]


def autocast(device, dtype):
    return torch.autocast(device_type=device, dtype=dtype)


def ulps(dtype) -> float:
    """One unit in the last place at 1.0 of ``dtype`` (its machine epsilon)."""
    return torch.finfo(dtype).eps


def fma_tol(device, dtype, values, size, terms=1, narrow=None):
    """The tolerance of our roi_align-family result (roi_align, multilevel_roi_align, their
    backward) against torchvision's on the same device; tests/test_roi_align.py applies it.

    CPU: bitwise (rtol = atol = 0): the same operations in the same order, and gcc for x86-64
    without -mfma contracts nothing. CUDA: torchvision's kernels are compiled with nvcc's
    default --fmad=true, ours with --fmad=false (the CPU's arithmetic, setup.py), so nvcc may
    turn torchvision's a * b + c into one FMA, which skips a rounding:
    - a bilinear sample w1 v1 + w2 v2 + w3 v3 + w4 v4: up to 3 roundings of half an ulp of
      ``values`` (the inputs' largest magnitude): 2 ulps;
    - a sample's coordinate y1 + ph * bin + (iy + 0.5) * bin / grid: one ulp of the coordinate
      (at most ``size``, the map's longest side in pixels), which moves the sample along a slope
      of at most 2 ``values`` per pixel: 2 ulps of ``values`` * ``size``;
    - the average over a bin keeps the bound; a gradient adds ``terms`` contributions (ROIs
      over one pixel, in the atomics' order on both sides), each within the same bound.
    Hence atol = 4 * eps(dtype) * values * (1 + size) * terms, rtol = 0. ``narrow``
    (float16 / bfloat16 results computed in float32): a float32 difference across that
    dtype's rounding boundary is one ulp of it, rtol = eps(narrow)."""
    if device == "cpu":
        return dict(rtol=0, atol=0)
    eps = torch.finfo(torch.float32 if narrow is not None else dtype).eps
    atol = 4 * eps * float(values) * (1 + float(size)) * terms
    return dict(rtol=torch.finfo(narrow).eps if narrow is not None else 0, atol=atol)


def assert_same_under_autocast(ours, theirs, device, dtype):
    """torchvision registers autocast kernels for roi_align and nms that cast float16 / bfloat16
    to float32 (roi_align's result back to the input's dtype). Our kernels compute float16 /
    bfloat16 in float32 and round once, so they equal torchvision bit for bit on the CPU, where
    our float32 kernels are torchvision's bit for bit; on CUDA, where they agree to 1e-5 (FMA
    contraction), the rounding to float16 / bfloat16 may then differ by one unit: one ulp of the
    dtype, relative."""
    assert ours.dtype == theirs.dtype
    if device == "cpu":
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    else:
        torch.testing.assert_close(ours, theirs, rtol=ulps(dtype), atol=ulps(dtype))


def quantize(t, scale, zero_point, qdtype):
    return torch.quantize_per_tensor(t, scale, zero_point, qdtype)


# ---- rpn_proposals -------------------------------------------------------------------------

RPN_PAD_H, RPN_PAD_W = 128, 160  # padded batch size: strides 4, 8, 16, 32, 53..64
RPN_GRIDS = [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]
RPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
RPN_RATIOS = (0.5, 1.0, 2.0)


def rpn_inputs(n, levels, dtype=torch.float32, device="cpu", extreme=True):
    """n images' objectness logits (distinct within an image) and deltas (some clamped, some
    giving zero-height boxes) over ``levels`` FPN levels, torchvision's AnchorGenerator for them,
    the levels' strides, the image sizes as a list and as a tensor."""
    grids = RPN_GRIDS[:levels]
    a = len(RPN_RATIOS)
    total = sum(h * w * a for h, w in grids)
    obj, deltas = [], []
    perms = torch.stack([torch.randperm(total) for _ in range(n)]).to(torch.float64) / total * 8 - 4
    off = 0
    for h, w in grids:
        k = h * w * a
        # Distinct logits per image, laid out as torchvision flattens them: (y, x, a).
        ob = perms[:, off : off + k].reshape(n, h, w, a).permute(0, 3, 1, 2)
        off += k
        d = torch.randn(n, 4 * a, h, w, dtype=torch.float64) * 0.7
        if extreme:
            # Huge dw (clamped at log(1000/16)) and very negative dh (a zero-height box).
            d.view(-1)[torch.randint(0, d.numel(), (d.numel() // 20,))] = 40.0
            d.view(-1)[torch.randint(0, d.numel(), (d.numel() // 20,))] = -40.0
        obj.append(ob.to(dtype).contiguous().to(device))
        deltas.append(d.to(dtype).to(device))
    sizes = [(RPN_PAD_H - 9 * i, RPN_PAD_W - 13 * i) for i in range(n)]
    gen = AnchorGenerator(RPN_SIZES[:levels], (RPN_RATIOS,) * levels)
    gen.set_cell_anchors(dtype, torch.device(device))
    strides = [(RPN_PAD_H // h, RPN_PAD_W // w) for h, w in grids]
    image_sizes = torch.tensor(sizes, dtype=torch.int64, device=device)
    return obj, deltas, gen, strides, sizes, image_sizes


# ---- detection_postprocess -----------------------------------------------------------------

DET_H, DET_W = 96, 128


def detection_inputs(n, p, c, dtype=torch.float32, device="cpu", counts=None, extreme=True):
    """Class logits (continuous: no ties), box regression (some extreme), proposals inside
    the DET_H x DET_W image, proposal counts and image sizes of n images of p proposals, c classes."""
    g = torch.float64
    cx, cy = torch.rand(n, p, dtype=g) * DET_W, torch.rand(n, p, dtype=g) * DET_H
    wh = torch.exp(torch.rand(n, p, 2, dtype=g) * 3) * 4
    props = torch.stack([cx - wh[..., 0] / 2, cy - wh[..., 1] / 2, cx + wh[..., 0] / 2, cy + wh[..., 1] / 2], -1)
    props = props.clamp(min=0)
    logits = torch.randn(n * p, c, dtype=g) * 2
    logits[:, 0] += 1.0
    reg = torch.randn(n * p, 4 * c, dtype=g)
    if extreme:
        reg.view(-1)[torch.randint(0, reg.numel(), (reg.numel() // 20,))] = 100.0
        reg.view(-1)[torch.randint(0, reg.numel(), (reg.numel() // 20,))] = -200.0
    sizes = torch.tensor([(DET_H - 7 * i, DET_W - 11 * i) for i in range(n)], dtype=torch.int64)
    if counts is not None:
        counts = torch.tensor(counts, dtype=torch.int64, device=device)
    to = dict(dtype=dtype, device=device)
    return logits.to(**to), reg.to(**to), props.to(**to), counts, sizes.to(device)


# ---- match_boxes ---------------------------------------------------------------------------

def match_random_boxes(n, dtype=torch.float32, grid=None):
    """``random_boxes``, or on a coarse grid of ``grid`` px (exact IoU ties) when it is given."""
    return random_boxes(n, dtype=dtype) if grid is None else grid_boxes(n, grid, cells=12, min_cells=1, dtype=dtype)


def near_boxes(gt, n, dtype=torch.float32):
    """n boxes jittered around the ground truths (many matches at every IoU level)."""
    b = gt.double()[torch.randint(0, len(gt), (n,))]
    size = (b[:, 2:] - b[:, :2]).repeat(1, 2)
    return (b + (torch.rand(n, 4, dtype=torch.float64) - 0.5) * 0.6 * size).to(dtype)


def pad_rows(rows, g):
    """Rows of boxes per image padded with zeros to [N, g, 4]."""
    out = torch.zeros(len(rows), g, 4, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def match_problem(gt_counts, t, dtype=torch.float32, grid=None, shared=False, box_counts=None):
    """Padded gt [N, G, 4] (pad rows are random junk: they must be ignored), boxes."""
    g = max(gt_counts + [1])
    gts = [match_random_boxes(k, dtype, grid) for k in gt_counts]
    gt = pad_rows([torch.cat([x, match_random_boxes(g - len(x), dtype)]) for x in gts], g)
    if shared:
        pool = torch.cat([x for x in gts if len(x)] or [match_random_boxes(1, dtype)])
        boxes = near_boxes(pool, t, dtype) if grid is None else match_random_boxes(t, dtype, grid)
    else:
        boxes = torch.stack([
            (near_boxes(x, t, dtype) if len(x) and grid is None else match_random_boxes(t, dtype, grid)) for x in gts
        ])
    counts = torch.tensor(gt_counts, dtype=torch.int64)
    bc = None if box_counts is None else torch.tensor(box_counts, dtype=torch.int64)
    return gt, counts, boxes, bc


def torchvision_match(gt, gt_counts, boxes, box_counts, high, low, allow):
    """torchvision, image by image; an image without gt is all -1 (torchvision raises)."""
    gt, boxes = gt.cpu(), boxes.cpu()
    n, t = gt.shape[0], boxes.shape[-2]
    out = torch.full((n, t), -1, dtype=torch.int64)
    for i in range(n):
        g = int(gt_counts[i])
        k = t if box_counts is None else int(box_counts[i])
        b = boxes if boxes.dim() == 2 else boxes[i]
        if g == 0 or k == 0:
            continue
        out[i, :k] = Matcher(high, low, allow)(torchvision.ops.box_iou(gt[i, :g], b[:k]))
    return out


# ---- mask_targets --------------------------------------------------------------------------

def blob_masks(g, h, w, dtype=torch.uint8, device="cpu"):
    """Blobs (blocky 0/1 regions) and, for some masks, salt-and-pepper pixels."""
    coarse = torch.rand(g, h // 5 + 1, w // 5 + 1) > 0.5
    m = coarse.repeat_interleave(5, 1).repeat_interleave(5, 2)[:, :h, :w].clone()
    m[::2] ^= torch.rand(m[::2].shape) > 0.9
    return m.to(dtype=dtype, device=device)


def boxes_of_every_kind(n, h, w):
    """Boxes of every kind: ordinary, tiny (under a pixel), zero-width, inverted, huge, partly
    and wholly outside the image."""
    rows = []
    for i in range(n):
        kind = i % 7
        x, y = (torch.rand(2) * torch.tensor([w, h])).tolist()
        bw, bh = (torch.rand(2) * torch.tensor([w, h]) * 0.7 + 1).tolist()
        if kind == 1:
            bw, bh = (torch.rand(2) * 0.9).tolist()
        elif kind == 2:
            bw = 0.0
        elif kind == 3:
            bw, bh = -bw / 3, -bh / 3
        elif kind == 4:
            x, y, bw, bh = -w * 0.7, -h * 0.4, 3.1 * w, 2.2 * h
        elif kind == 5:
            x, y = (x - w, y + h * 0.8) if i % 2 else (x + w * 0.9, y - h)
        elif kind == 6:
            x, y = (-bw - 2.5, y) if i % 2 else (x, h + 1.5)
        rows.append([x, y, x + bw, y + bh])
    return torch.tensor(rows)


# ---- packed_mask_targets -------------------------------------------------------------------

RESIZES = ["identity", "double", "half", "up", "down", "ratio", "torchvision"]


def resized_size(h, w, kind, generator=None):
    """(H', W') for a source frame h x w: the same, twice, about half, larger, smaller, unrelated
    non-integer ratios per axis, or torchvision's transform rule (one scale_factor, the output
    size floor(size * scale) as F.interpolate's recompute_scale_factor=True computes it)."""
    def r(lo, hi):
        return float(torch.rand((), generator=generator)) * (hi - lo) + lo

    if kind == "identity":
        return h, w
    if kind == "double":
        return 2 * h, 2 * w
    if kind == "half":
        return h // 2, w // 2
    if kind == "up":
        s = r(1.0, 3.0)
        return int(h * s) + 1, int(w * s) + 1
    if kind == "down":
        s = r(0.3, 1.0)
        return int(h * s), int(w * s)
    if kind == "ratio":
        return int(h * r(0.4, 2.5)), int(w * r(0.4, 2.5))
    assert kind == "torchvision"
    if min(h, w) == 0:
        return h, w
    min_size, max_size = int(r(10, 120)), int(r(40, 200))
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return int(math.floor(h * scale)), int(math.floor(w * scale))


def packed_masks(n, max_side=60, resize=None, generator=None, values=False, empty_every=7):
    """n instances packed as PackedMasks' tensors: (data uint8 [D], instances int64 [n, 9]).
    Each has its own source frame (1..max_side a side, sometimes 0), a crop inside it (sometimes
    empty, sometimes the whole frame or touching its edges) holding blobs and salt-and-pepper
    pixels (uint8 values 0..255 when ``values``), and a resized frame of kind ``resize`` (drawn
    from RESIZES when None). Offsets are in random order, with gaps."""
    g = generator

    def randint(lo, hi):  # [lo, hi]
        return int(torch.randint(lo, hi + 1, (), generator=g))

    rows, crops = [], []
    for i in range(n):
        h, w = randint(1, max_side), randint(1, max_side)
        if randint(0, 11) == 0:
            h, w = (0, w) if randint(0, 1) else (h, 0)
        kind = resize or RESIZES[randint(0, len(RESIZES) - 1)]
        oh, ow = resized_size(h, w, kind, g)
        if empty_every and i % empty_every == empty_every - 1 or h == 0 or w == 0:
            x0, y0, cw, ch = (randint(0, w), randint(0, h), 0, 0)
        elif randint(0, 5) == 0:
            x0, y0, cw, ch = 0, 0, w, h
        else:
            x0, y0 = randint(0, w - 1), randint(0, h - 1)
            cw, ch = randint(1, w - x0), randint(1, h - y0)
        coarse = torch.rand(ch // 3 + 1, cw // 3 + 1, generator=g) > 0.5
        crop = coarse.repeat_interleave(3, 0).repeat_interleave(3, 1)[:ch, :cw].clone()
        crop ^= torch.rand(crop.shape, generator=g) > 0.93
        crop = crop.to(torch.uint8)
        if values:
            crop = crop * torch.randint(0, 256, crop.shape, generator=g, dtype=torch.uint8)
        crops.append(crop.flatten())
        rows.append([0, x0, y0, cw, ch, h, w, oh, ow])
    # place the crops in a random order, with a few bytes of junk between them
    data, end = [], 0
    for i in torch.randperm(n, generator=g).tolist():
        junk = torch.randint(0, 2, (randint(0, 3),), generator=g, dtype=torch.uint8)
        data += [junk, crops[i]]
        rows[i][0] = end + junk.numel()
        end += junk.numel() + crops[i].numel()
    data = torch.cat(data) if data else torch.zeros(0, dtype=torch.uint8)
    return data, torch.tensor(rows, dtype=torch.int64).reshape(n, 9)


def dense_masks(data, instances, resized=True):
    """The dense equivalent of packed masks, one uint8 [H', W'] (or [H, W] when not ``resized``)
    per instance: the crop placed in its source frame, resized with torch's nearest rule as
    torchvision's transform resizes masks."""
    out = []
    data = data.cpu().to(torch.uint8)
    for off, x0, y0, cw, ch, h, w, oh, ow in instances.cpu().tolist():
        m = torch.zeros(h, w, dtype=torch.uint8)
        m[y0:y0 + ch, x0:x0 + cw] = data[off:off + cw * ch].reshape(ch, cw)
        if resized:
            if min(h, w, oh, ow) == 0:
                m = torch.zeros(oh, ow, dtype=torch.uint8)
            else:
                m = torch.nn.functional.interpolate(m[None, None].float(), size=(oh, ow), mode="nearest")[0, 0]
                m = m.to(torch.uint8)  # exact: values 0..255
        out.append(m)
    return out


def packed_boxes(instances, instance_index):
    """Boxes of every kind (boxes_of_every_kind) in the resized frame of each box's instance."""
    rows = instances[instance_index].cpu()
    out = torch.zeros(rows.shape[0], 4)
    for k, (oh, ow) in enumerate(rows[:, 7:].tolist()):
        out[k] = boxes_of_every_kind(7, max(oh, 1), max(ow, 1))[k % 7]
    return out


def dense_mask_targets(data, instances, boxes, instance_index, m):
    """The oracle of packed_mask_targets: our mask_targets on the dense resized masks, each
    instance its own image."""
    dense = [d[None].to(boxes.device) for d in dense_masks(data, instances)]
    zeros = torch.zeros_like(instance_index)
    if not dense:
        dense = [torch.zeros(1, 0, 0, dtype=torch.uint8, device=boxes.device)]
    return torch.ops.maskrcnn_fast.mask_targets(dense, boxes, instance_index, zeros, m)
