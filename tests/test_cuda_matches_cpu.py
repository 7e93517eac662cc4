"""Every CUDA kernel against the CPU kernel of the same op, on two back ends:

- ``emu``: the kernels of csrc/cuda compiled as host C++ (maskrcnn_fast._C_emu, csrc/emu): they
  run on every CI run, without a GPU;
- ``cuda``: the GPU, where one and the CUDA kernels exist (marked ``cuda``).

Both kernels call the same csrc/common/ functions, compiled without FMA contraction, so results
are compared bitwise, except where the two sides do not share the arithmetic:
- gradients the CUDA kernels sum with atomics (roi_align, multilevel_roi_align backward): the
  order of the additions follows the threads' interleaving, so the sums agree within a few
  roundings of the accumulation type (``_atomic_tols``);
- float64 exp/log on a GPU (libdevice) are not the host library's (box decode and encode,
  rpn_proposals, detection_postprocess): on ``cuda`` within 8 ulps (``_close``); the emulated
  kernels call the host library, so bitwise;
- the FPN level of multilevel_roi_align: the CUDA kernel divides by 224 as s * (1 / 224) and a
  GPU's log2f is not glibc's, so a box within a rounding of a level boundary may take another
  level; these tests keep boxes away from the boundaries (tests/test_multilevel_roi_align.py
  tests the boundary rule itself).
NaN equals NaN everywhere here (degenerate boxes encode to NaN on both sides).

The sanitizer runs (scripts/sanitize_emu.sh) select the ``emu`` cases by marker (registered in
pyproject.toml), never by name:
- ``-m "emu and not large"``: make sanitize's AddressSanitizer set, all but the ``large`` cases
  (grid-stride tails, the 140k-box NMS: minutes each under a sanitizer);
- ``-m "emu and small"``: its ThreadSanitizer set, one dtype per op (the first of the test's
  list: ``first(...)``), the guards and the small special cases;
- ``-m "emu and sanitize_ci"``: .ci/run's AddressSanitizer set, one dtype per op, the guards
  and the small NMS cases.
A new case joins them by the marks it is given here.
"""
import pytest
import torch

import maskrcnn_fast
from maskrcnn_fast import emulated
from support import CUDA_AVAILABLE
from support.ops import blob_masks, boxes_of_every_kind, detection_inputs, match_problem, rpn_inputs

BACKENDS = [
    pytest.param("emu", marks=[pytest.mark.emu, pytest.mark.skipif(
        not emulated.available(), reason=f"no emulated CUDA kernels: {emulated.error()}")]),
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not CUDA_AVAILABLE, reason="no GPU, or the CUDA kernels are not built")]),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
small, large, sanitize_ci = pytest.mark.small, pytest.mark.large, pytest.mark.sanitize_ci


def first(values, *marks):
    """``values`` with ``marks`` on the first one only (its id unchanged: ``dtype0``): the
    sanitizer sets run one dtype per op, the other dtypes run the same indexing."""
    return [pytest.param(values[0], marks=list(marks)), *values[1:]]


ONE_DTYPE = first(DTYPES, small, sanitize_ci)  # the dtypes, float32 in both sanitizer sets


def _map(x, fn):
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_map(v, fn) for v in x)
    return x


class Backend:
    """Runs an op of torch.ops.maskrcnn_fast on the emulated kernels (CPU tensors in and out)
    or on the GPU (inputs moved there, outputs brought back)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, op, *args):
        if self.name == "emu":
            return getattr(torch.ops.maskrcnn_fast_emu, op)(*args)
        out = getattr(torch.ops.maskrcnn_fast, op)(*_map(args, lambda t: t.cuda()))
        return _map(out, lambda t: t.cpu())

    def __repr__(self):
        return self.name


@pytest.fixture(params=BACKENDS)
def backend(request):
    return Backend(request.param)


def cpu(op, *args):
    return getattr(torch.ops.maskrcnn_fast, op)(*args)


def same(a, b):
    """Bitwise (NaN equals NaN; -0 equals 0), recursively over lists and tuples."""
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
        return
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True)


def check(backend, op, *args):
    """The CPU kernel and the backend's CUDA kernel give the same bits; returns the result."""
    expected = cpu(op, *args)
    same(expected, backend(op, *args))
    return expected


def _close(backend, dtype):
    """Compare bitwise, except float64 on a GPU (libdevice exp/log, see the module doc)."""
    if backend.name == "cuda" and dtype == torch.float64:
        def f(a, b):
            if isinstance(a, (list, tuple)):
                for x, y in zip(a, b):
                    f(x, y)
                return
            if a.is_floating_point():
                eps = torch.finfo(a.dtype).eps
                scale = a.abs().nan_to_num(0, 0, 0).max().item() if a.numel() else 0.0
                torch.testing.assert_close(b, a, rtol=8 * eps, atol=8 * eps * scale, equal_nan=True)
            else:
                same(a, b)
        return f
    return same


def _atomic_tols(dtype):
    # A few roundings of the accumulation type (float for half/bfloat16, which are then rounded
    # once more to their own type: one ulp of that type).
    return {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5),
            torch.float16: dict(rtol=1e-3, atol=1e-3), torch.bfloat16: dict(rtol=8e-3, atol=8e-3)}[dtype]


def boxes(n, h, w, dtype=torch.float32):
    xy = torch.rand(n, 2) * torch.tensor([w, h]) * 1.1 - 10
    wh = torch.rand(n, 2) * torch.tensor([w, h]) / 3
    return torch.cat([xy, xy + wh], 1).to(dtype)


@pytest.mark.emu
@small
def test_build_info_reports_the_emulation():
    info = maskrcnn_fast.build_info()
    assert info["emulated_cuda"] == emulated.available()


# ---- anchors, box coder -----------------------------------------------------------------

CELL = torch.tensor([[-16.0, -16, 16, 16], [-8, -24, 8, 24], [-24, -8, 24, 8]])


@pytest.mark.parametrize("dtype", ONE_DTYPE)
def test_grid_anchors(backend, dtype):
    cell = torch.cat([CELL, CELL * 2, CELL * 4]).to(dtype)
    check(backend, "grid_anchors", cell, [3, 3, 3], [50, 68, 25, 34, 13, 17], [16, 16, 32, 32, 64, 64])
    check(backend, "grid_anchors", cell[:3], [3], [0, 5], [4, 4])  # no anchors


@large
def test_grid_anchors_grid_stride_tail(backend):
    # 1024 * 700 * 3 anchors: more than the 8192 blocks x 256 threads of one pass.
    check(backend, "grid_anchors", CELL, [3], [1024, 700], [4, 4])


@pytest.mark.parametrize("dtype", ONE_DTYPE)
def test_box_coder(backend, dtype, seed):
    close = _close(backend, dtype)
    ref = boxes(500, 300, 400, dtype)
    codes = (torch.randn(500, 4 * 7) * 2).to(dtype)
    codes[::17] = 40.0  # clamped dw, dh
    w = [10.0, 10.0, 5.0, 5.0]
    close(cpu("decode_boxes", codes, ref, w, 4.135, [300, 400]),
          backend("decode_boxes", codes, ref, w, 4.135, [300, 400]))
    close(cpu("decode_boxes", codes, ref, w, 4.135, None), backend("decode_boxes", codes, ref, w, 4.135, None))
    # Degenerate boxes (zero width after rounding to bfloat16 too) encode to NaN on both sides.
    gt = boxes(500, 300, 400, dtype)
    gt[::9, 2] = gt[::9, 0]
    close(cpu("encode_boxes", gt, ref, w), backend("encode_boxes", gt, ref, w))
    close(cpu("decode_boxes", codes[:0], ref[:0], w, 4.135, None),
          backend("decode_boxes", codes[:0], ref[:0], w, 4.135, None))


@large
def test_decode_grid_stride_tail(backend, seed):
    # 20000 boxes x 106 classes: more decoded boxes than one pass of 8192 x 256 threads.
    ref = boxes(20000, 800, 1088)
    codes = torch.randn(20000, 4 * 106)
    check(backend, "decode_boxes", codes, ref, [10.0, 10.0, 5.0, 5.0], 4.135, [800, 1088])


# ---- nms ---------------------------------------------------------------------------------

@small
@pytest.mark.parametrize("n", [*(pytest.param(n, marks=sanitize_ci) for n in [0, 1, 300]), 3000])
def test_nms(backend, n, seed):
    b = boxes(n, 600, 800)
    s = torch.randperm(n).float() / max(n, 1)
    check(backend, "nms", b, s, 0.6)
    check(backend, "batched_nms", b, s, torch.randint(0, 80, (n,)), 0.5)


@sanitize_ci
@pytest.mark.parametrize("dtype", first([torch.float64, torch.float16, torch.bfloat16], small))
def test_nms_dtypes(backend, dtype, seed):
    b = boxes(700, 600, 800, dtype)
    s = torch.rand(700).to(dtype)  # ties in half precision: the sort is stable on both sides
    check(backend, "nms", b, s, 0.5)
    check(backend, "batched_nms", b, s, torch.randint(0, 5, (700,)), 0.5)


@small
@sanitize_ci
def test_batched_nms_negative_and_sparse_categories(backend, seed):
    # Any int64 category is a category: negative ones, huge ones (issue 10, defect 1).
    b = boxes(400, 300, 300)
    s = torch.rand(400)
    idxs = torch.tensor([-1, -7, 0, 5, 2**40, -(2**50)])[torch.randint(0, 6, (400,))]
    check(backend, "batched_nms", b, s, idxs, 0.5)
    small = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    keep = check(backend, "batched_nms", small, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([-1, -1, 0]), 0.5)
    assert keep.tolist() == [0, 2]


def test_batched_nms_far_tiles(backend, seed):
    # One category of 5000 boxes: beyond the mask band of 64 tiles (4096 boxes) boxes are
    # tested directly against each tile's kept boxes.
    b = boxes(5600, 2000, 2000)
    s = torch.rand(5600)
    idxs = torch.where(torch.arange(5600) < 5000, 3, torch.randint(0, 4, (5600,)))
    check(backend, "batched_nms", b, s, idxs, 0.5)


@large
def test_batched_nms_removed_bits_in_global_memory(backend, seed):
    # One category over 131072 boxes: its removed bits no longer fit in shared memory. Small
    # boxes spread over a large image, so most survive the mask band and reach the far tests.
    n = 140_000
    xy = torch.rand(n, 2) * 20000
    b = torch.cat([xy, xy + 5 + torch.rand(n, 2) * 20], 1)
    check(backend, "batched_nms", b, torch.rand(n), torch.zeros(n, dtype=torch.int64), 0.5)


# ---- roi_align ---------------------------------------------------------------------------

def _rois(k, n, h, w, dtype):
    return torch.cat([torch.randint(0, n, (k, 1)).to(dtype), boxes(k, h, w, dtype)], 1)


def _backward_matches(backend, op, grad, *args, dtype):
    expected = cpu(op, grad, *args)
    got = backend(op, grad, *args)
    for a, b in zip(expected if isinstance(expected, list) else [expected],
                    got if isinstance(got, list) else [got]):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(b, a, **_atomic_tols(dtype))


@pytest.mark.parametrize("dtype", ONE_DTYPE)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align(backend, dtype, aligned, sampling_ratio, channels_last, seed):
    x = torch.randn(2, 40, 24, 30, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = _rois(30, 2, 96, 120, dtype)
    args = (rois, 0.25, 7, 7, sampling_ratio, aligned)
    out = check(backend, "roi_align", x, *args)
    grad = torch.randn_like(out)
    _backward_matches(backend, "_roi_align_backward", grad, rois, 0.25, 7, 7, 2, 40, 24, 30,
                      sampling_ratio, aligned, dtype=dtype)


@small
def test_roi_align_large_rois_and_empty(backend, seed):
    # Adaptive sampling grids too large for the shared tap table (taps computed per sample).
    x = torch.randn(1, 3, 300, 320)
    rois = torch.tensor([[0.0, -20, -10, 900, 700], [0, 5, 5, 310, 290], [0, 50, 60, 52, 61]])
    out = check(backend, "roi_align", x, rois, 1.0, 7, 7, -1, True)
    _backward_matches(backend, "_roi_align_backward", torch.randn_like(out), rois, 1.0, 7, 7, 1, 3,
                      300, 320, -1, True, dtype=torch.float32)
    check(backend, "roi_align", x, rois[:0], 1.0, 7, 7, 2, False)
    check(backend, "_roi_align_backward", out[:0], rois[:0], 1.0, 7, 7, 1, 3, 300, 320, 2, False)


@small
@sanitize_ci
def test_roi_align_guards(backend, seed):
    """ROIs the CPU rejects (batch index outside the batch, not an integer, NaN): the CUDA kernel
    pools zeros for them, and gives them no gradient, without a host sync."""
    x = torch.randn(2, 5, 20, 20)
    rois = _rois(12, 2, 80, 80, torch.float32)
    bad = torch.tensor([1, 4, 7, 10])
    rois[1, 0], rois[4, 0], rois[7, 0], rois[10, 1] = 2, -1, 0.5, float("nan")
    good = rois.clone()
    good[bad] = torch.tensor([0.0, 1, 1, 4, 4])
    expected = cpu("roi_align", x, good, 0.25, 5, 5, 2, False)
    expected[bad] = 0
    same(expected, backend("roi_align", x, rois, 0.25, 5, 5, 2, False))
    grad = torch.randn_like(expected)
    g_bad = grad.clone()
    g_bad[bad] = 0  # what the invalid ROIs would have added: nothing
    torch.testing.assert_close(backend("_roi_align_backward", grad, rois, 0.25, 5, 5, 2, 5, 20, 20, 2, False),
                               cpu("_roi_align_backward", g_bad, good, 0.25, 5, 5, 2, 5, 20, 20, 2, False),
                               **_atomic_tols(torch.float32))


# ---- multilevel_roi_align ------------------------------------------------------------------

def _off_level_boundaries(b, scale=224, margin=1e-3):
    """Boxes whose FPN level is not within `margin` (in log2) of a boundary (see the module
    doc): those too close are enlarged by 1%, which moves them well away."""
    s = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).double().clamp(min=1e-12).sqrt()
    lvl = torch.log2(s / scale)
    near = (lvl - lvl.round()).abs() < margin
    c = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) / 2 * torch.where(near, 1.01, 1.0)[:, None].to(b.dtype)
    return torch.cat([c - half, c + half], 1)


@pytest.mark.parametrize("dtype", ONE_DTYPE)
@pytest.mark.parametrize("channels_last", [False, True])
def test_multilevel_roi_align(backend, dtype, channels_last, seed):
    feats = [torch.randn(2, 8, 100 >> i, 136 >> i, dtype=dtype) for i in range(4)]
    if channels_last:
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    b = _off_level_boundaries(boxes(70, 400, 544, torch.float64)).to(dtype)
    rois = torch.cat([torch.randint(0, 2, (70, 1)).to(dtype), b], 1)
    scales = [0.25, 0.125, 0.0625, 0.03125]
    args = (rois, scales, 7, 7, 2, False, 224, 4, 1e-6)
    out = check(backend, "multilevel_roi_align", feats, *args)
    _backward_matches(backend, "_multilevel_roi_align_backward", torch.randn_like(out), *args, 2, 8,
                      [f.shape[2] for f in feats], [f.shape[3] for f in feats], dtype=dtype)


@small
@pytest.mark.parametrize("channels_last", [False, True])
def test_multilevel_roi_align_channel_blocks(backend, channels_last, seed):
    """Several blocks of channels per ROI with a partial last one (40 channels: 32 + 8 on
    channels_last maps, 11 at a time on NCHW ones), and 14x14 bins: partial staging tiles."""
    feats = [torch.randn(2, 40, 60 >> i, 80 >> i) for i in range(3)]
    if channels_last:
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    b = _off_level_boundaries(boxes(9, 240, 320, torch.float64)).float()
    rois = torch.cat([torch.randint(0, 2, (9, 1)).float(), b], 1)
    check(backend, "multilevel_roi_align", feats, rois, [0.25, 0.125, 0.0625], 14, 14, -1, True,
          224, 4, 1e-6)


@small
@sanitize_ci
def test_multilevel_roi_align_guards(backend, seed):
    feats = [torch.randn(2, 4, 50 >> i, 68 >> i) for i in range(4)]
    b = _off_level_boundaries(boxes(16, 200, 272, torch.float64)).float()
    rois = torch.cat([torch.randint(0, 2, (16, 1)).float(), b], 1)
    bad = torch.tensor([2, 5, 9, 13])
    rois[2, 0], rois[5, 0], rois[9, 3], rois[13, 0] = 2, -1, float("nan"), 1.5
    good = rois.clone()
    good[bad] = torch.tensor([0.0, 1, 1, 40, 40])
    args = ([0.25, 0.125, 0.0625, 0.03125], 7, 7, 2, True, 224, 4, 1e-6)
    expected = cpu("multilevel_roi_align", feats, good, *args)
    expected[bad] = 0
    same(expected, backend("multilevel_roi_align", feats, rois, *args))


# ---- paste_masks -------------------------------------------------------------------------

# float32 in .ci/run's set; none in ThreadSanitizer's (full-size masks: tens of minutes there)
@pytest.mark.parametrize("dtype", first(DTYPES, sanitize_ci))
@pytest.mark.parametrize("threshold", [None, 0.5])
def test_paste_masks(backend, dtype, threshold, seed):
    masks = torch.rand(30, 1, 28, 28).to(dtype)
    b = boxes(30, 300, 400)
    idx = torch.randint(0, 3, (30,))
    sizes = torch.tensor([[300, 400], [250, 333], [120, 400]])
    check(backend, "paste_masks", masks, b, None, None, 300, 400, 1, threshold)
    check(backend, "paste_masks", masks, b, idx, sizes, 300, 400, 1, threshold)
    check(backend, "paste_masks", masks[:0], b[:0], None, None, 300, 400, 1, threshold)


@small
@sanitize_ci
def test_paste_masks_guards(backend, seed):
    """An image index outside image_sizes, or a NaN box: an all-zero mask instead of a read out
    of bounds (the CPU raises for the index)."""
    masks = torch.rand(6, 1, 14, 14)
    b = boxes(6, 60, 80)
    b[4, 2] = float("nan")
    idx = torch.tensor([0, 2, 1, -1, 0, 1])
    sizes = torch.tensor([[60, 80], [50, 70]])
    good = idx.clamp(0, 1)
    expected = cpu("paste_masks", masks, b, good, sizes, 60, 80, 1, None)
    expected[torch.tensor([1, 3])] = 0
    same(expected, backend("paste_masks", masks, b, idx, sizes, 60, 80, 1, None))


# ---- fused inference ops -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", ONE_DTYPE)
def test_rpn_proposals(backend, dtype, seed):
    obj, deltas, gen, strides, _, image_sizes = rpn_inputs(2, 5, dtype)
    cells = [c.to(dtype) for c in gen.cell_anchors]
    flat = [s for st in strides for s in st]
    for pre, post in [(60, 40), (1000, 300)]:
        _close(backend, dtype)(cpu("rpn_proposals", obj, deltas, cells, flat, image_sizes, pre, post, 0.7, 1e-3, 0.0),
                               backend("rpn_proposals", obj, deltas, cells, flat, image_sizes, pre, post, 0.7, 1e-3, 0.0))


@small
def test_rpn_proposals_ties_and_nan(backend):
    """Tied logits rank by torchvision's (y, x, a) index on both devices (issue 10, defect 2),
    and a NaN logit or score ranks first whatever its sign bit (defect 3)."""
    obj = [torch.zeros(1, 2, 1, 2)]
    deltas = [torch.zeros(1, 8, 1, 2)]
    cells = [torch.tensor([[-4.0, -4, 4, 4], [-8, -2, 8, 2]])]
    sizes = torch.tensor([[16, 32]])
    out = check(backend, "rpn_proposals", obj, deltas, cells, [16, 16], sizes, 2, 4, 0.99, 1e-3, 0.0)
    assert out[2].tolist() == [2]
    neg_nan = torch.tensor(float("nan")).neg()
    assert torch.signbit(neg_nan)
    for dtype in [torch.float32, torch.bfloat16]:
        o = torch.randint(0, 3, (2, 3, 4, 5)).to(dtype)  # many ties
        o[0, 1, 2, 3] = neg_nan
        d = [torch.randn(2, 12, 4, 5).to(dtype)]
        c = [torch.tensor([[-4.0, -4, 4, 4], [-8, -2, 8, 2], [-2, -8, 2, 8]]).to(dtype)]
        s = torch.tensor([[64, 80], [50, 70]])
        check(backend, "rpn_proposals", [o], d, c, [16, 16], s, 7, 10, 0.5, 1e-3, 0.0)
    b = boxes(50, 100, 100)
    scores = torch.rand(50)
    scores[[3, 17]] = neg_nan
    keep = check(backend, "nms", b, scores, 0.5)
    assert keep[:2].tolist() == [3, 17]
    check(backend, "batched_nms", b, scores, torch.randint(0, 3, (50,)), 0.5)


@pytest.mark.parametrize("dtype", ONE_DTYPE)
def test_detection_postprocess(backend, dtype, seed):
    logits, reg, props, _, sizes = detection_inputs(3, 40, 7, dtype)
    w = [10.0, 10.0, 5.0, 5.0]
    for counts in [None, torch.tensor([40, 33, 0])]:
        args = (logits, reg, props, counts, sizes, w, 4.135, 0.05, 0.5, 60)
        _close(backend, dtype)(cpu("detection_postprocess", *args), backend("detection_postprocess", *args))


# ---- training ops ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ONE_DTYPE)
def test_box_iou(backend, dtype, seed):
    check(backend, "box_iou", boxes(300, 200, 300, dtype), boxes(170, 200, 300, dtype))
    check(backend, "box_iou", boxes(0, 200, 300, dtype), boxes(17, 200, 300, dtype))


@large
def test_box_iou_grid_stride_tail(backend, seed):
    # 4100 x 4100 pairs: more than the 65536 blocks x 256 threads of one pass.
    check(backend, "box_iou", boxes(4100, 800, 1088), boxes(4100, 800, 1088))


@pytest.mark.parametrize("dtype", ONE_DTYPE)
@pytest.mark.parametrize("low_quality", [False, True])
def test_match_boxes(backend, dtype, low_quality, seed):
    for shared, grid, box_counts in [(False, None, None), (True, None, None), (False, 16.0, [70, 0, 200])]:
        gt, counts, b, bc = match_problem([5, 0, 12], 200, dtype, grid=grid, shared=shared, box_counts=box_counts)
        check(backend, "match_boxes", gt, counts, b, bc, 0.7, 0.3, low_quality)


@large
def test_match_boxes_many_gt_and_tail(backend, seed):
    # Over 128 ground-truth boxes: several chunks in shared memory; float64 keys.
    gt, counts, b, _ = match_problem([300, 140], 3000, torch.float64)
    check(backend, "match_boxes", gt, counts, b, None, 0.5, 0.4, True)
    # Over 2048 blocks x 256 threads of boxes: the grid-stride tail.
    gt, counts, b, _ = match_problem([3], 530_000, shared=True)
    check(backend, "match_boxes", gt, counts, b, None, 0.7, 0.3, True)


@pytest.mark.parametrize("dtype", ONE_DTYPE)
def test_mask_targets(backend, dtype, seed):
    sizes = [(37, 53), (64, 40), (21, 30)]
    masks = [blob_masks(int(torch.randint(1, 5, ())), h, w) for h, w in sizes]
    b = torch.cat([boxes_of_every_kind(14, h, w) for h, w in sizes]).to(dtype)
    img = torch.arange(3).repeat_interleave(14)
    gt = torch.cat([torch.randint(0, m.shape[0], (14,)) for m in masks])
    check(backend, "mask_targets", masks, b, img, gt, 28)
    check(backend, "mask_targets", masks, b[:0], img[:0], gt[:0], 28)


@small
@sanitize_ci
def test_mask_targets_many_images_and_guards(backend, seed):
    """Over 64 images (one launch per 64), and indices the CPU rejects: zeros, no read out of
    bounds."""
    masks = [blob_masks(2, 20 + i % 7, 24 + i % 5) for i in range(70)]
    b = boxes(140, 20, 24)
    img = torch.arange(70).repeat_interleave(2)
    gt = torch.randint(0, 2, (140,))
    check(backend, "mask_targets", masks, b, img, gt, 14)
    bad_img, bad_gt = img.clone(), gt.clone()
    bad_img[[3, 77]] = torch.tensor([70, -1])
    bad_gt[[10, 100]] = torch.tensor([2, -1])
    expected = cpu("mask_targets", masks, b, img, gt, 14)
    expected[[3, 77, 10, 100]] = 0
    same(expected, backend("mask_targets", masks, b, bad_img, bad_gt, 14))
