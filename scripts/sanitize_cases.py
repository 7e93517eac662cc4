"""Small cases that reach every CUDA kernel's edges, forward and backward, for compute-sanitizer.

    compute-sanitizer --tool memcheck  python scripts/sanitize_cases.py
    compute-sanitizer --tool racecheck python scripts/sanitize_cases.py
    MF_SANITIZE_DEVICE=emu python scripts/sanitize_cases.py   # the CUDA kernels, emulated
    MF_SANITIZE_DEVICE=cpu python scripts/sanitize_cases.py   # the CPU kernels

scripts/gpu_check.sh --sanitize runs both tools. The cases are small (the sanitizer slows kernels
down 10-100x) but each reaches what a kernel must get right where no test can see memory:

- the in-kernel guards, which CUDA has instead of the CPU's errors (no host synchronisation):
  an ROI batch index out of range, an image index and a matched index out of range, counts
  beyond the padded rows, NaN and infinite boxes (a guarded element must come out zero); the
  CPU kernels must raise on the same inputs instead;
- the size thresholds where a kernel changes path: one NMS category over 4,096 boxes (beyond
  batched_nms's mask band), more than 128 ground-truth boxes (match_boxes' shared-memory
  chunk), mask_targets over more than 64 images (one launch's image table), a partial last
  block, empty inputs;
- every layout and type: channels_last forward and backward of both ROI aligns, float64,
  half and bfloat16 (also under autocast's mixed inputs where an op takes them).

Prints one line per case with its time; exits non-zero when a case fails (the sanitizer reports
memory errors and races itself, and exits with its own code).
"""
import contextlib
import math
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import maskrcnn_fast  # noqa: E402,F401  registers torch.ops.maskrcnn_fast

__all__ = ["CASES", "main"]

OPS = torch.ops.maskrcnn_fast
# cuda: the GPU; emu: the CUDA kernels emulated on CPU tensors (maskrcnn_fast.emulated, where
# built), which reaches the same guards without a GPU; cpu: the CPU kernels
MODE = os.environ.get("MF_SANITIZE_DEVICE", "cuda")
DEV = "cpu" if MODE == "emu" else MODE
REDUCED = [torch.float16, torch.bfloat16]
FLOATS = [torch.float32, torch.float64] + REDUCED


def _boxes(n, size=64.0, g=None, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=g) * size - 8
    wh = torch.rand(n, 2, generator=g) * size / 2
    return torch.cat([xy, xy + wh], 1).to(DEV, dtype)


def _with_bad_rows(boxes):
    """The same boxes with a NaN, an infinite and an inverted row: guarded, never a crash."""
    b = boxes.clone()
    if b.shape[0] >= 3:
        b[0, 1] = math.nan
        b[1, 2] = math.inf
        b[2] = b[2].flip(0)
    return b


def _guarded(name, fn):
    """Data only the device can check: the CPU kernels raise naming ``name``; the CUDA kernels
    must run without a host sync (the kernel guards the bad element: zeros, no read outside the
    tensors). Returns fn()'s result from the CUDA kernels, None from the CPU's."""
    if MODE != "cpu":
        return fn()
    try:
        fn()
    except RuntimeError as e:
        if name not in str(e):
            raise
        return None
    raise AssertionError(f"the CPU accepted a bad {name}")


def _zero(t):
    assert t is None or not t.any(), "a guarded element was not zero"


# ---- cases --------------------------------------------------------------------------------------
def case_anchors(g):
    cells = torch.tensor([[-16.0, -8, 16, 8], [-8, -8, 8, 8], [-8, -16, 8, 16]], device=DEV)
    for dtype in FLOATS:
        OPS.grid_anchors(cells.repeat(2, 1).to(dtype), [3, 3], [5, 7, 3, 2], [4, 4, 8, 8])
    OPS.grid_anchors(cells, [3], [0, 7], [4, 4])


def case_box_coder(g):
    for dtype in FLOATS:
        ref = _with_bad_rows(_boxes(37, g=g, dtype=dtype))
        codes = torch.randn(37, 8, generator=g).to(DEV, dtype)
        codes[3, 2] = math.nan
        codes[4, 3] = 1e30 if dtype != torch.float16 else 6e4
        OPS.decode_boxes(codes, ref, [10.0, 10.0, 5.0, 5.0], 4.135, [50, 60])
        OPS.decode_boxes(codes, ref, [10.0, 10.0, 5.0, 5.0], 4.135, None)
        OPS.encode_boxes(_with_bad_rows(_boxes(37, g=g, dtype=dtype)), ref, [1.0, 1.0, 1.0, 1.0])
    OPS.decode_boxes(torch.zeros(0, 4, device=DEV), torch.zeros(0, 4, device=DEV), [1.0] * 4, 4.135, None)


def case_nms(g):
    for dtype in FLOATS:
        b, s = _boxes(300, g=g, dtype=dtype), torch.rand(300, generator=g).to(DEV, dtype)
        b = _with_bad_rows(b)
        s[5] = math.nan
        OPS.nms(b, s, 0.5)
        OPS.batched_nms(b, s, torch.randint(0, 7, (300,), generator=g).to(DEV), 0.5)
    OPS.nms(b[:0], s[:0], 0.5)
    OPS.batched_nms(b[:0], s[:0], torch.zeros(0, dtype=torch.int64, device=DEV), 0.5)
    OPS.nms(b[:65], s[:65], 0.5)  # a partial second tile


def case_nms_one_category_over_4096(g):
    # 4,500 boxes in category 3 (beyond the 64-word mask band: far boxes tested directly), a
    # few in others; clustered so that suppression reaches across the band.
    n = 4500
    b = _boxes(n, size=300.0, g=g)
    s = torch.rand(n, generator=g).to(DEV)
    idxs = torch.full((n + 40,), 3, dtype=torch.int64)
    idxs[n:] = torch.randint(0, 3, (40,), generator=g)
    b = torch.cat([b, _boxes(40, g=g)])
    s = torch.cat([s, torch.rand(40, generator=g).to(DEV)])
    OPS.batched_nms(b, s, idxs.to(DEV), 0.5)
    OPS.nms(b, s, 0.5)


def case_roi_align(g):
    for dtype in FLOATS:
        x = torch.randn(2, 3, 9, 11, generator=g).to(DEV, dtype).requires_grad_()
        rois = torch.cat([torch.randint(0, 2, (13, 1), generator=g).to(DEV, dtype),
                          _with_bad_rows(_boxes(13, 12.0, g, dtype))], 1)
        for aligned in (False, True):
            OPS.roi_align(x, rois, 0.5, 3, 4, -1, aligned).float().sum().backward()
        # channels_last, forward and backward; more channels than one block's chunk
        xc = torch.randn(2, 70, 9, 11, generator=g).to(DEV, dtype)
        xc = xc.contiguous(memory_format=torch.channels_last).requires_grad_()
        OPS.roi_align(xc, rois, 1.0, 2, 2, 2, False).float().sum().backward()
    OPS.roi_align(x.detach(), rois[:0], 1.0, 2, 2, 2, False)


def case_roi_align_bad_batch_index(g):
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 5, 8, 8, generator=g).to(DEV).contiguous(memory_format=layout).requires_grad_()
        for b in (2.0, -1.0, 0.5, math.nan, 1e10):
            rois = torch.tensor([[1, 1.0, 1.0, 6.0, 6.0], [b, 1.0, 1.0, 6.0, 6.0]], device=DEV)
            out = _guarded("rois", lambda: OPS.roi_align(x, rois, 1.0, 2, 2, 2, False))
            _zero(None if out is None else out[1])
            _guarded("rois", lambda: OPS._roi_align_backward(
                torch.ones(2, 5, 2, 2, device=DEV), rois, 1.0, 2, 2, 2, 5, 8, 8, -1, False))


def case_multilevel_roi_align(g):
    for dtype in FLOATS:
        for layout in (torch.contiguous_format, torch.channels_last):
            feats = [torch.randn(2, 36, 16 >> i, 20 >> i, generator=g).to(DEV, dtype)
                     .contiguous(memory_format=layout).requires_grad_() for i in range(3)]
            rois = torch.cat([torch.randint(0, 2, (17, 1), generator=g).to(DEV, dtype),
                              _with_bad_rows(_boxes(17, 60.0, g, dtype))], 1)
            out = OPS.multilevel_roi_align(feats, rois, [0.25, 0.125, 0.0625], 7, 7, 2, False, 224, 4, 1e-6)
            out.float().sum().backward()


def case_multilevel_roi_align_bad_batch_index(g):
    feats = [torch.randn(2, 4, 16 >> i, 20 >> i, generator=g).to(DEV) for i in range(2)]
    for b in (2.0, -1.0, 0.5, math.nan):
        rois = torch.tensor([[1, 1.0, 1.0, 30.0, 30.0], [b, 1.0, 1.0, 30.0, 30.0]], device=DEV)
        out = _guarded("rois", lambda: OPS.multilevel_roi_align(
            feats, rois, [0.25, 0.125], 3, 3, 2, False, 224, 4, 1e-6))
        _zero(None if out is None else out[1])


def case_paste_masks(g):
    for dtype in FLOATS:
        masks = torch.rand(5, 1, 7, 7, generator=g).to(DEV, dtype)
        boxes = _with_bad_rows(_boxes(5, 40.0, g, dtype))
        index = torch.tensor([0, 1, 1, 0, 1], device=DEV)
        sizes = torch.tensor([[30, 41], [37, 29]], device=DEV)
        OPS.paste_masks(masks, boxes, None, None, 33, 45, 1, None)
        OPS.paste_masks(masks, boxes, index, sizes, 40, 45, 1, 0.5)
    OPS.paste_masks(masks[:0], boxes[:0], None, None, 33, 45, 1, None)


def case_paste_masks_bad_image_index(g):
    masks = torch.rand(3, 1, 7, 7, generator=g).to(DEV)
    boxes = _boxes(3, 20.0, g)
    sizes = torch.tensor([[30, 41], [37, 29]], device=DEV)
    for bad in (2, -1, 1 << 40):
        index = torch.tensor([0, bad, 1], device=DEV)
        out = _guarded("image_index", lambda: OPS.paste_masks(masks, boxes, index, sizes, 40, 45, 1, 0.5))
        _zero(None if out is None else out[1])


def case_rpn_proposals(g):
    shapes = [(10, 12), (5, 6)]
    for dtype in FLOATS:
        obj = [torch.randn(2, 3, h, w, generator=g).to(DEV, dtype) for h, w in shapes]
        obj[0][0, 1, 2, 3] = math.nan
        deltas = [torch.randn(2, 12, h, w, generator=g).to(DEV, dtype) for h, w in shapes]
        deltas[1][1, 2, 0, 0] = math.inf
        cells = [torch.tensor([[-8.0, -4, 8, 4], [-4, -4, 4, 4], [-4, -8, 4, 8]], device=DEV, dtype=dtype) * s
                 for s in (1, 2)]
        sizes = torch.tensor([[40, 48], [33, 47]], device=DEV)
        OPS.rpn_proposals(obj, deltas, cells, [4, 4, 8, 8], sizes, 50, 30, 0.7, 1e-3, 0.0)
        # fewer candidates than pre_nms_top_n, and the objectness ties of a constant map
        OPS.rpn_proposals([torch.zeros_like(o) for o in obj], deltas, cells, [4, 4, 8, 8], sizes,
                          1000, 300, 0.7, 0.0, 0.0)


def case_detection_postprocess(g):
    n, p, c = 2, 20, 5
    for dtype in FLOATS:
        logits = torch.randn(n * p, c, generator=g).to(DEV, dtype)
        logits[3, 1] = math.nan
        reg = torch.randn(n * p, 4 * c, generator=g).to(DEV, dtype)
        props = _with_bad_rows(_boxes(n * p, 50.0, g, dtype)).reshape(n, p, 4)
        sizes = torch.tensor([[50, 60], [45, 52]], device=DEV)
        for counts in (torch.tensor([20, 13], device=DEV), None):
            OPS.detection_postprocess(logits, reg, props, counts, sizes, [10.0, 10.0, 5.0, 5.0], 4.135,
                                      0.05, 0.5, 10)


def case_detection_postprocess_bad_counts(g):
    logits, reg = torch.randn(8, 3, generator=g).to(DEV), torch.randn(8, 12, generator=g).to(DEV)
    props = _boxes(8, 50.0, g).reshape(2, 4, 4)
    sizes = torch.tensor([[50, 60], [45, 52]], device=DEV)
    for bad in ([5, 1], [-1, 2]):
        _guarded("proposal_counts", lambda: OPS.detection_postprocess(
            logits, reg, props, torch.tensor(bad, device=DEV), sizes, [10.0] * 4, 4.135, 0.05, 0.5, 10))


def case_box_iou(g):
    for dtype in FLOATS:
        a = _with_bad_rows(_boxes(37, g=g, dtype=dtype))
        OPS.box_iou(a, _boxes(300, g=g, dtype=dtype))
        OPS.box_iou(a[:0], _boxes(3, g=g, dtype=dtype))


def case_match_boxes(g):
    # more ground truths than one shared-memory chunk (128), a partial chunk, float64, NaN rows
    for dtype in FLOATS:
        gt = _boxes(2 * 130, 200.0, g, dtype).reshape(2, 130, 4)
        gt[0, 5, 0] = math.nan
        boxes = _with_bad_rows(_boxes(2 * 40, 200.0, g, dtype)).reshape(2, 40, 4)
        counts = torch.tensor([130, 129], device=DEV)
        box_counts = torch.tensor([40, 21], device=DEV)
        for low_quality in (True, False):
            OPS.match_boxes(gt, counts, boxes, box_counts, 0.7, 0.3, low_quality)
        OPS.match_boxes(gt, counts, boxes[0], None, 0.5, 0.5, False)  # shared boxes
    OPS.match_boxes(gt[:, :0], torch.zeros(2, dtype=torch.int64, device=DEV), boxes, None, 0.7, 0.3, True)


def case_match_boxes_bad_counts(g):
    gt, boxes = _boxes(2 * 3, g=g).reshape(2, 3, 4), _boxes(2 * 5, g=g).reshape(2, 5, 4)
    for counts, box_counts in (([1, 4], None), ([-1, 2], None), ([1, 2], [6, 0])):
        bc = None if box_counts is None else torch.tensor(box_counts, device=DEV)
        _guarded("outside", lambda: OPS.match_boxes(gt, torch.tensor(counts, device=DEV), boxes, bc,
                                                    0.7, 0.3, True))


def _mask_problem(images, per_image, g, dtype=torch.float32):
    masks = [torch.randint(0, 2, (int(torch.randint(1, 4, (1,), generator=g)), 24 + i % 7, 31 - i % 5),
                           generator=g, dtype=torch.uint8).to(DEV) for i in range(images)]
    n = images * per_image
    image_index = torch.arange(images).repeat_interleave(per_image)
    matched = torch.stack([torch.randint(0, masks[i].shape[0], (1,), generator=g)[0] for i in image_index.tolist()])
    return masks, _boxes(n, 30.0, g, dtype), image_index.to(DEV), matched.to(DEV)


def case_mask_targets(g):
    for dtype in (torch.float32, torch.float64):
        masks, boxes, image_index, matched = _mask_problem(3, 4, g, dtype)
        OPS.mask_targets(masks, _with_bad_rows(boxes), image_index, matched, 7)
    # more images than one launch takes (64)
    masks, boxes, image_index, matched = _mask_problem(70, 2, g)
    OPS.mask_targets(masks, boxes, image_index, matched, 28)
    OPS.mask_targets(masks, boxes[:0], image_index[:0], matched[:0], 28)


def case_mask_targets_bad_indices(g):
    masks, boxes, image_index, matched = _mask_problem(3, 3, g)
    for name, bad_image, bad_matched in (("image_index", 3, None), ("image_index", -1, None),
                                         ("matched_index", None, 9), ("matched_index", None, -1)):
        ii, mm = image_index.clone(), matched.clone()
        if bad_image is not None:
            ii[4] = bad_image
        if bad_matched is not None:
            mm[4] = bad_matched
        out = _guarded(name, lambda: OPS.mask_targets(masks, boxes, ii, mm, 7))
        _zero(None if out is None else out[4])


def case_packed_mask_targets(g):
    rows = torch.tensor([[0, 2, 3, 5, 4, 12, 10, 18, 15], [20, 0, 0, 4, 5, 8, 8, 8, 8],
                         [40, 0, 0, 0, 0, 8, 8, 4, 4]], device=DEV)
    data = (torch.rand(40, generator=g) > 0.5).to(torch.uint8).to(DEV)
    index = torch.tensor([0, 1, 2, 0, 1, 2], device=DEV)
    for dtype in FLOATS:
        OPS.packed_mask_targets(data, rows, _with_bad_rows(_boxes(6, 18.0, g, dtype)), index, 28)
    # boxes beyond the shared-memory tap table: the per-sample kernel
    big = torch.tensor([[0.0, 0.0, 900.0, 700.0]], device=DEV)
    OPS.packed_mask_targets(data, rows, big, index[:1], 28)
    OPS.packed_mask_targets(data, rows, big[:0], index[:0], 28)
    bad = rows.clone()
    bad[1, 0] = 39  # row 1's crop past the end of data
    _zero(_guarded("instances row 1", lambda: OPS.packed_mask_targets(data, bad, big, index[1:2], 7)))
    _zero(_guarded("instance_index", lambda: OPS.packed_mask_targets(data, rows, big, index[:1] + 3, 7)))


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]
# MF_SANITIZE_ONLY=bad,nms: only the cases whose names contain one of these
_ONLY = [w for w in os.environ.get("MF_SANITIZE_ONLY", "").split(",") if w]
if _ONLY:
    CASES = [c for c in CASES if any(w in c.__name__ for w in _ONLY)]


def main() -> int:
    if MODE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    kernels = contextlib.nullcontext
    if MODE == "emu":
        from maskrcnn_fast import emulated

        kernels = emulated.cuda
    g = torch.Generator().manual_seed(0)
    failed = 0
    for case in CASES:
        t0 = time.perf_counter()
        try:
            with kernels():
                case(g)
            if DEV == "cuda":
                torch.cuda.synchronize()
            print(f"ok    {case.__name__} ({time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception:  # report every case, then fail
            failed += 1
            print(f"FAIL  {case.__name__}", flush=True)
            traceback.print_exc()
    print(f"{len(CASES) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
