import math

import pytest
import torch
import torchvision
from torchvision import ops as tvops

import maskrcnn_fast  # noqa: F401  registers the ops
from maskrcnn_fast import ops
from maskrcnn_fast.ops import MultiScaleRoIAlign, multilevel_roi_align
from maskrcnn_fast.ops import reference as ref
from support.ops import LOW_DTYPES, assert_same_under_autocast, autocast, fma_tol

OP = torch.ops.maskrcnn_fast.multilevel_roi_align
BWD = torch.ops.maskrcnn_fast._multilevel_roi_align_backward
NAMES = ["0", "1", "2", "3", "4"]


def _level_sizes(h, w, n_levels):
    """Feature sizes of an R50-FPN on an h x w batch: stride 4, then halving (ceil)."""
    sizes, fh, fw = [], math.ceil(h / 4), math.ceil(w / 4)
    for _ in range(n_levels):
        sizes.append((fh, fw))
        fh, fw = math.ceil(fh / 2), math.ceil(fw / 2)
    return sizes


def _pyramid(n_levels, batch_hw, n=2, c=2, dtype=torch.float32, device="cpu"):
    return {
        NAMES[i]: torch.rand(n, c, fh, fw, dtype=dtype, device=device)
        for i, (fh, fw) in enumerate(_level_sizes(*batch_hw, n_levels))
    }


def _boxes(n, h, w, dtype=torch.float32, device="cpu"):
    """Boxes of every FPN size (sqrt area 4 .. 1100 px, log-uniform, plus one per level size),
    some partly outside the image, and a degenerate (zero-width) one."""
    s = torch.exp(torch.empty(n).uniform_(math.log(4), math.log(1100)))
    s = torch.cat([s, torch.tensor([50.0, 150.0, 300.0, 600.0, 1000.0])])
    ar = torch.exp(torch.empty(s.numel()).uniform_(-0.8, 0.8))
    bw, bh = s * ar.sqrt(), s / ar.sqrt()
    cx, cy = torch.rand(s.numel()) * w, torch.rand(s.numel()) * h
    b = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    b[:-5:3].clamp_(min=0)  # most boxes inside, the others cross the border
    b[0, 2] = b[0, 0]  # zero width
    return b.to(dtype=dtype, device=device)


def _rois(boxes):
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])


# (batch size fed to the backbone, images in it): padded 800x1088 batch, and an odd-sized one.
CASES = {
    "800x1088": ((800, 1088), [(800, 1088), (640, 1001)]),
    "799x1000": ((799, 1000), [(799, 1000), (511, 733), (799, 640)]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("output_size", [7, 14])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("n_levels", [1, 2, 3, 4, 5])
def test_matches_torchvision(device, seed, n_levels, sampling_ratio, output_size, case):
    batch_hw, shapes = CASES[case]
    x = _pyramid(n_levels, batch_hw, n=len(shapes), device=device)
    x["extra"] = torch.rand(len(shapes), 2, 5, 5, device=device)  # not in featmap_names
    boxes = [_boxes(40, h, w, device=device) for h, w in shapes]
    names = NAMES[:n_levels]
    ours = MultiScaleRoIAlign(names, output_size, sampling_ratio)
    tv = torchvision.ops.MultiScaleRoIAlign(names, output_size, sampling_ratio)
    got = ours(x, boxes, shapes)
    want = tv(x, boxes, shapes)
    assert ours.scales == tv.scales
    if n_levels > 1:  # every level is used
        k = [-int(math.log2(s)) for s in ours.scales]
        lv = ref.fpn_levels(torch.cat(boxes), k[0], k[-1])
        assert set(lv.tolist()) >= set(range(n_levels))
    assert got.shape == want.shape == (sum(len(b) for b in boxes), 2, output_size, output_size)
    # bitwise on the CPU (same arithmetic in the same order); on CUDA torchvision's roi_align
    # contracts into FMAs, ours does not (support.ops.fma_tol: the rule and why)
    values = max(v.abs().max().item() for v in x.values())
    size = max(max(v.shape[-2:]) for v in x.values())  # the maps' pixels
    torch.testing.assert_close(got, want, **fma_tol(device, got.dtype, values, size))


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("n_levels", [1, 3, 5])
def test_matches_reference(device, seed, n_levels, sampling_ratio):
    shapes = [(128, 160), (97, 131)]
    x = list(_pyramid(n_levels, (128, 160), c=3, dtype=torch.float64, device=device).values())
    # float32 boxes, so that the float32 run below sees exactly the same ones
    rois = _rois([_boxes(30, h, w, torch.float32, device) for h, w in shapes]).double()
    scales = [2.0 ** -(2 + i) for i in range(n_levels)]
    x = [f.requires_grad_() for f in x]
    want = ref.multilevel_roi_align(x, rois, (7, 5), scales, sampling_ratio)
    got = multilevel_roi_align(x, rois, (7, 5), scales, sampling_ratio)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    g = torch.rand_like(got)
    for a, b in zip(torch.autograd.grad(got, x, g), torch.autograd.grad(want, x, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    x = [f.detach() for f in x]
    # float32 against the float64 oracle (torchvision's tolerance), on the ROIs that get the
    # same level in both precisions
    x32, rois32 = [f.float() for f in x], rois.float()
    k_max = 1 + n_levels
    same = ref.fpn_levels(rois32[:, 1:], 2, k_max) == ref.fpn_levels(rois[:, 1:], 2, k_max)
    got32 = multilevel_roi_align(x32, rois32[same], (7, 5), scales, sampling_ratio)
    torch.testing.assert_close(got32.double(), want[same], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
def test_aligned_and_canonical_args(device, seed, aligned):
    x = list(_pyramid(3, (256, 320), device=device, dtype=torch.float64).values())
    rois = _rois([_boxes(30, 256, 320, torch.float64, device) for _ in range(2)])
    scales = [0.25, 0.125, 0.0625]
    args = ((3, 4), scales, 0, aligned, 112, 3, 1e-3)
    torch.testing.assert_close(multilevel_roi_align(x, rois, *args),
                               ref.multilevel_roi_align(x, rois, *args), rtol=1e-10, atol=1e-12)


def test_empty_boxes(device):
    x = _pyramid(4, (128, 160), device=device)
    shapes = [(128, 160), (100, 150)]
    m = MultiScaleRoIAlign(NAMES[:4], 7, 2)
    one_empty = [_boxes(5, 128, 160, device=device), torch.zeros(0, 4, device=device)]
    got = m(x, one_empty, shapes)
    want = torchvision.ops.MultiScaleRoIAlign(NAMES[:4], 7, 2)(x, one_empty, shapes)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    none = [torch.zeros(0, 4, device=device)] * 2
    assert m(x, none, shapes).shape == (0, 2, 7, 7)
    feats = [f.requires_grad_() for f in x.values()]
    out = multilevel_roi_align(feats, none, 7, m.scales, 2)
    grads = torch.autograd.grad(out.sum(), feats)
    assert all(g.shape == f.shape and not g.any() for g, f in zip(grads, feats))


def test_layouts(device, seed):
    """channels_last and non-contiguous maps, non-contiguous rois: same bits as contiguous."""
    x = list(_pyramid(4, (200, 264), c=5, device=device).values())
    rois = _rois([_boxes(40, 200, 264, device=device) for _ in range(2)])
    scales = [0.25, 0.125, 0.0625, 0.03125]
    want = multilevel_roi_align(x, rois, 7, scales, 2)
    cl = [f.contiguous(memory_format=torch.channels_last) for f in x]
    strided = [torch.rand(2, 10, f.size(2), f.size(3) * 2, device=device)[:, ::2, :, ::2]
               for f in x]
    for f, s in zip(x, strided):
        s.copy_(f)
    rois_nc = torch.stack([rois, rois], 2)[..., 0]
    assert not rois_nc.is_contiguous()
    for feats, r in ((cl, rois), (strided, rois), (x, rois_nc)):
        got = multilevel_roi_align(feats, r, 7, scales, 2)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision(device, seed, dtype):
    x = list(_pyramid(4, (200, 264), c=3, device=device).values())
    rois = _rois([_boxes(40, 200, 264, device=device) for _ in range(2)])
    scales = [0.25, 0.125, 0.0625, 0.03125]
    xr, rr = [f.to(dtype) for f in x], rois.to(dtype)
    got = multilevel_roi_align(xr, rr, 7, scales, 2)
    assert got.dtype == dtype
    # Levels and accumulation are in float32 (as torchvision's levels): one rounding away from
    # float32 on the same inputs.
    f32 = multilevel_roi_align([f.float() for f in xr], rr.float(), 7, scales, 2)
    torch.testing.assert_close(got, f32.to(dtype), rtol=0, atol=0)
    # torchvision's tolerance for half (test_ops.py), that of assert_close for bfloat16
    tol = dict(rtol=4e-3, atol=4e-3) if dtype == torch.float16 else dict(rtol=1.6e-2, atol=1e-5)
    # The float64 oracle is compared where it is continuous: half boxes (coarse coordinates)
    # often put a sample exactly on a map's border, where RoIAlign jumps from the edge value to
    # zero and float32 and float64 roundings fall on either side; and their levels are computed
    # in float64 there, in float32 in the op (as torchvision).
    lv32 = ref.fpn_levels(rr[:, 1:].float(), 2, 5)
    keep = (lv32 == ref.fpn_levels(rr[:, 1:].double(), 2, 5)) & _samples_off_borders(
        rr.double(), lv32, [f.shape[-2:] for f in x], scales, 7, 2)
    want = ref.multilevel_roi_align([f.double() for f in xr], rr.double()[keep], 7, scales, 2)
    torch.testing.assert_close(got[keep].double(), want, **tol)


def _samples_off_borders(rois, levels, sizes, scales, out, ratio, margin=1e-3):
    """BoolTensor[K]: the ROI's sample points (aligned=False, fixed sampling ratio) all lie
    farther than `margin` map pixels from -1 and from the map's height and width, the
    discontinuities of RoIAlign's bilinear read."""
    keep = torch.ones(rois.size(0), dtype=torch.bool)
    frac = (torch.arange(out, dtype=torch.float64)[:, None]
            + (torch.arange(ratio, dtype=torch.float64) + 0.5) / ratio).flatten()
    for k, (roi, lvl) in enumerate(zip(rois.tolist(), levels.tolist())):
        if lvl < 0:
            continue
        (h, w), sc = sizes[lvl], scales[lvl]
        for lo, hi, size in ((roi[1], roi[3], w), (roi[2], roi[4], h)):
            start = lo * sc
            pts = start + frac * max(hi * sc - start, 1.0) / out
            if bool(((pts + 1).abs() < margin).any() or ((pts - size).abs() < margin).any()):
                keep[k] = False
    return keep


def _boundary_squares(dtype):
    """Boxes [0, 0, s, s] with s within about 13 float32 ulps of each level boundary of a
    4-level pyramid: log2(s / 224) + 1e-6 = n for n = -1, 0, 1, where the level's floor changes.
    Returns Tensor[3, 801, 4], one group per boundary."""
    groups = []
    for n in (-1, 0, 1):
        edge = 224.0 * 2.0 ** (n - 1e-6)
        s = (edge * (1 + torch.arange(-400, 401, dtype=torch.float64) * 2e-9)).to(dtype)
        zeros = torch.zeros_like(s)
        groups.append(torch.stack([zeros, zeros, s, s], 1))
    return torch.stack(groups)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_level_boundaries_match_torchvision(device, dtype):
    """The level rule at its boundaries, where float32 roundings and the device's log2 decide:
    each map is constant (its level number), so a 1x1 output says which level a box went to."""
    image = 896
    feats = {NAMES[i]: torch.full((1, 1, image >> (2 + i), image >> (2 + i)), float(i + 1),
                                  dtype=dtype, device=device) for i in range(4)}
    groups = _boundary_squares(dtype).to(device)
    boxes = [groups.reshape(-1, 4)]
    got = MultiScaleRoIAlign(NAMES[:4], 1, 1)(feats, boxes, [(image, image)])
    want = torchvision.ops.MultiScaleRoIAlign(NAMES[:4], 1, 1)(feats, boxes, [(image, image)])
    for n, levels in enumerate(got.reshape(3, -1).cpu()):  # each group straddles its boundary
        assert set(levels.round().tolist()) == {n + 1.0, n + 2.0}, n
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision(device, seed, dtype):
    """Half maps with float32 boxes (AMP): torchvision's result under autocast (float32
    arithmetic, rounded to the maps' dtype), read in place without casting the maps."""
    shapes = [(256, 320), (200, 301)]
    x = {k: v.to(dtype) for k, v in _pyramid(3, (256, 320), c=3, device=device).items()}
    boxes = [_boxes(30, h, w, device=device) for h, w in shapes]
    got = MultiScaleRoIAlign(NAMES[:3], 7, 2)(x, boxes, shapes)
    with torch.autocast(torch.device(device).type, dtype=dtype):
        want = torchvision.ops.MultiScaleRoIAlign(NAMES[:3], 7, 2)(x, boxes, shapes)
    assert got.dtype == want.dtype == dtype
    # float32 arithmetic rounded to dtype: on CUDA the float32 values may differ by FMA
    # contraction (support.ops.fma_tol), then by one ulp of dtype across a rounding boundary
    values = max(v.abs().max().item() for v in x.values())
    size = max(max(v.shape[-2:]) for v in x.values())  # the maps' pixels
    torch.testing.assert_close(got, want, **fma_tol(device, dtype, values, size, narrow=dtype))
    feats = [f.requires_grad_() for f in x.values()]
    out = multilevel_roi_align(feats, boxes, 7, [0.25, 0.125, 0.0625], 2)
    grads = torch.autograd.grad(out.float().sum(), feats)
    assert all(g.dtype == dtype for g in grads)


def test_non_finite_and_negative_area(device):
    x = list(_pyramid(3, (128, 128), device=device).values())
    nan, inf = float("nan"), float("inf")
    rois = torch.tensor([[0, nan, 0, 10, 10], [0, 0, 0, inf, 10], [1, 5, 5, -inf, 8],
                         [0, 20, 5, 10, 40],  # x2 < x1: negative area, NaN level
                         [1, 10, 10, 60, 70]], device=device)
    out = multilevel_roi_align(x, rois, 4, [0.25, 0.125, 0.0625], 0)
    assert torch.isfinite(out).all()
    assert not out[:4].any() and out[4].any()
    # a single map takes the negative-area box, as torchvision's roi_align
    one = multilevel_roi_align(x[:1], rois[3:4], 4, [0.25], 2)
    tv = torchvision.ops.roi_align(x[0], rois[3:4], 4, 0.25, 2)
    torch.testing.assert_close(one, tv, rtol=0, atol=0)


def test_huge_grid(device, seed):
    """Bins with more samples than the CPU kernel plans at once (here 86 x 86) are computed
    sample by sample: same values and gradients."""
    x = torch.rand(1, 2, 600, 600, device=device, requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 600, 600], [0, 10, 20, 500, 590.0]], device=device)
    got = multilevel_roi_align([x], rois, 7, [1.0], 0)
    want = torchvision.ops.roi_align(x, rois, 7, 1.0, 0)
    # coordinates up to 600 px: on CUDA an ulp of one moves a sample by 6e-5 px, the bulk of
    # support.ops.fma_tol's bound (torchvision contracts into FMAs, ours does not)
    torch.testing.assert_close(got, want, **fma_tol(device, got.dtype, 1.0, 600))
    g = torch.rand_like(got)
    (a,) = torch.autograd.grad(got, x, g)
    (b,) = torch.autograd.grad(want, x, g)
    torch.testing.assert_close(a, b, **fma_tol(device, a.dtype, 1.0, 600, terms=len(rois)))


def test_gradcheck(device, seed):
    x = [torch.rand(2, 2, h, w, dtype=torch.float64, device=device, requires_grad=True)
         for h, w in ((12, 10), (6, 5), (3, 3))]
    rois = torch.tensor([[0, 1, 1, 20, 30], [1, 3, 2, 40, 33], [0, 0, 0, 47, 40],
                         [1, 10, 12, 14, 13], [0, 30, 2, 45, 20]],
                        dtype=torch.float64, device=device)
    for sr in (-1, 2):
        fn = lambda *f: multilevel_roi_align(list(f), rois, 3, [0.25, 0.125, 0.0625], sr,
                                             canonical_scale=16)
        assert torch.autograd.gradcheck(fn, x)


@pytest.mark.parametrize("n_levels", [1, 4])
def test_grad_matches_torchvision(device, seed, n_levels):
    shapes = [(800, 1088), (700, 1000)]
    x = _pyramid(n_levels, (800, 1088), device=device, c=2)
    boxes = [_boxes(60, h, w, device=device) for h, w in shapes]
    names = NAMES[:n_levels]
    grads = []
    for m in (MultiScaleRoIAlign(names, 7, 2), torchvision.ops.MultiScaleRoIAlign(names, 7, 2)):
        feats = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
        out = m(feats, boxes, shapes)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device)
        grads.append(torch.autograd.grad(out, list(feats.values()), g))
    for a, b in zip(*grads):
        if device == "cpu":  # torchvision's serial CPU backward adds in our order
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_backward_deterministic_and_reduced(seed):
    x = list(_pyramid(4, (200, 264), c=6).values())
    rois = _rois([_boxes(80, 200, 264) for _ in range(2)])
    scales = [0.25, 0.125, 0.0625, 0.03125]
    g = torch.randn(rois.size(0), 6, 7, 7)
    args = (rois, scales, 7, 7, 2, False, 224, 4, 1e-6, 2, 6,
            [f.size(2) for f in x], [f.size(3) for f in x])
    threads = torch.get_num_threads()
    try:
        a = BWD(g, *args)
        torch.set_num_threads(1)
        b = BWD(g, *args)
    finally:
        torch.set_num_threads(threads)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    # half: accumulated in float32, rounded once
    rh = rois.half()
    h = BWD(g.half(), rh, *args[1:])
    f = BWD(g.half().float(), rh.float(), *args[1:])
    for u, v in zip(h, f):
        assert u.dtype == torch.float16
        torch.testing.assert_close(u, v.half(), rtol=0, atol=0)


def test_opcheck(device):
    x = [torch.rand(2, 3, h, w, device=device, requires_grad=True) for h, w in ((16, 20), (8, 10))]
    rois = torch.tensor([[0, 1, 1, 30, 40], [1, 3, 2, 60, 70], [0, 10, 12, 14, 13.0]],
                        device=device)
    args = (x, rois, [0.25, 0.125], 3, 2, 2, False, 224, 4, 1e-6)
    torch.library.opcheck(OP.default, args)
    torch.library.opcheck(OP.default, (x, rois[:0], [0.25, 0.125], 3, 2, -1, True, 56, 3, 1e-6))
    xh = [f.detach().bfloat16().requires_grad_() for f in x]
    torch.library.opcheck(OP.default, (xh, rois, [0.25, 0.125], 3, 2, 0, False, 224, 4, 1e-6))
    g = torch.rand(3, 3, 3, 2, device=device)
    torch.library.opcheck(BWD.default, (g, rois, [0.25, 0.125], 3, 2, 2, False, 224, 4, 1e-6,
                                        2, 3, [16, 8], [20, 10]))


def test_compile(seed):
    x = list(_pyramid(2, (64, 64)).values())
    rois = _rois([_boxes(10, 64, 64)])
    fn = lambda f, r: multilevel_roi_align(f, r, 3, [0.25, 0.125], 2)
    torch.testing.assert_close(torch.compile(fn, fullgraph=True)(x, rois), fn(x, rois))


def test_bad_inputs(device):
    x = [torch.rand(2, 3, 16, 16, device=device), torch.rand(2, 3, 8, 8, device=device)]
    rois = torch.tensor([[0, 1, 1, 30, 40.0]], device=device)
    sc = [0.25, 0.125]

    def call(feats=x, r=rois, scales=sc, ph=2, pw=2, cs=224):
        return OP(feats, r, scales, ph, pw, 2, False, cs, 4, 1e-6)

    with pytest.raises(RuntimeError, match="rois"):
        call(r=rois[0])
    with pytest.raises(RuntimeError, match="rois"):
        call(r=rois[:, :4])
    with pytest.raises(RuntimeError, match="rois"):
        call(r=rois.long())
    with pytest.raises(RuntimeError, match="features"):
        call(feats=[x[0].double(), x[1]])
    with pytest.raises(RuntimeError, match="rois"):
        call(r=rois.double())
    with pytest.raises(RuntimeError, match="rois"):  # float32 rois only with reduced maps
        call(feats=[f.half() for f in x], r=rois.bfloat16())
    with pytest.raises(RuntimeError, match="features"):
        call(feats=[x[0], x[1][:, :2]])
    with pytest.raises(RuntimeError, match="features"):
        call(feats=[x[0], x[1][0]])
    with pytest.raises(RuntimeError, match="features"):
        call(feats=[], scales=[])
    with pytest.raises(RuntimeError, match="features"):
        call(feats=[x[0]] * 9, scales=[0.25] * 9)
    with pytest.raises(RuntimeError, match="scales"):
        call(scales=[0.25])
    with pytest.raises(RuntimeError, match="scales"):
        call(scales=[0.25, -1.0])
    with pytest.raises(RuntimeError, match="scales"):
        call(scales=[0.25, 1e-300])
    with pytest.raises(RuntimeError, match="pooled_height"):
        call(ph=0)
    with pytest.raises(RuntimeError, match="sampling_ratio"):
        OP(x, rois, sc, 2, 2, 5000, False, 224, 4, 1e-6)
    with pytest.raises(RuntimeError, match="canonical_scale"):
        call(cs=0)
    with pytest.raises(ValueError, match="features"):
        multilevel_roi_align([], rois, 2, [])
    with pytest.raises(ValueError, match="boxes"):
        multilevel_roi_align(x, [rois[:, :3]], 2, sc)
    with pytest.raises(ValueError, match="image_shapes"):
        MultiScaleRoIAlign(["0", "1"], 2, 2)({"0": x[0], "1": x[1]}, [rois[:, 1:]], [])
    with pytest.raises(RuntimeError, match="features"):  # a map on another device
        call(feats=[x[0], x[1].to("meta")])
    with pytest.raises(RuntimeError, match="grad"):
        BWD(torch.rand(1, 3, 2, 3, device=device), rois, sc, 2, 2, 2, False, 224, 4, 1e-6,
            2, 3, [16, 8], [16, 8])
    with pytest.raises(RuntimeError, match="heights"):
        BWD(torch.rand(1, 3, 2, 2, device=device), rois, sc, 2, 2, 2, False, 224, 4, 1e-6,
            2, 3, [16, -8], [16, 8])
    if device == "cpu":  # data-dependent: an error on the CPU, zeros on CUDA
        for b in (2.0, -1.0, 0.5, float("nan")):
            bad = rois.clone()
            bad[0, 0] = b
            with pytest.raises(RuntimeError, match="rois"):
                call(r=bad)
    else:
        bad = rois.clone()
        bad[0, 0] = 5
        assert not call(r=bad).any()


def test_repr_and_scales():
    m = MultiScaleRoIAlign(["0", "1"], (7, 5), 2)
    assert repr(m) == ("MultiScaleRoIAlign(featmap_names=['0', '1'], output_size=(7, 5), "
                       "sampling_ratio=2)")
    x = {"0": torch.rand(1, 1, 200, 250), "1": torch.rand(1, 1, 100, 125)}
    m(x, [torch.tensor([[0.0, 0, 10, 10]])], [(799, 1000)])
    assert m.scales == [0.25, 0.125]


# ---- found by the differential fuzz tests (tests/fuzz), each as a minimal example: the comment
# says what failed and which side was wrong (reference, oracle or neither) ------------------

def test_multilevel_backward_tiny_roi_follows_the_dtype(device):
    # Found: the float32 multilevel_roi_align gradient differed from the float64 reference's for
    # a ROI 3e-12 px high with aligned=True: in float32 the -0.5 shift absorbs the height (no
    # sample, zero gradient), in float64 it does not. Not a kernel bug; the fuzz test now
    # compares float32 forward and backward with the reference evaluated in float32.
    feats = [torch.rand(1, 1, 2, 2, device=device, requires_grad=True)]
    rois = torch.tensor([[0.0, 0.0, 0.0, 1.0, 3.1773e-12]], device=device)
    out = multilevel_roi_align(feats, rois, 1, [0.5], -1, True)
    fr = [feats[0].detach().cpu().clone().requires_grad_(True)]
    want = ref.multilevel_roi_align(fr, rois.cpu(), 1, [0.5], -1, True)
    assert torch.equal(out.detach().cpu(), want.detach())
    g = torch.autograd.grad(out, feats, torch.ones_like(out))[0].cpu()
    assert torch.equal(g, torch.autograd.grad(want, fr, torch.ones_like(want))[0])


# ---- drop-in for torchvision.ops.MultiScaleRoIAlign: autocast -----------------------------------

@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("low_boxes", [False, True])
def test_autocast_multiscale_roi_align(device, seed, dtype, low_boxes):
    names = ["0", "1", "2", "3"]
    feats = {k: torch.randn(2, 4, 64 >> i, 80 >> i, device=device, dtype=dtype).requires_grad_(True)
             for i, k in enumerate(names)}
    sizes = [(256, 320), (230, 300)]
    boxes = []
    for h, w in sizes:  # every FPN level: sides 8 .. 300 px
        s = torch.exp(torch.empty(30).uniform_(math.log(8), math.log(300)))
        c = torch.rand(30, 2) * torch.tensor([w, h])
        boxes.append(torch.cat([c - s[:, None] / 2, c + s[:, None] / 2], 1).to(device))
    if low_boxes:
        boxes = [b.to(dtype) for b in boxes]
    ours_m, theirs_m = ops.MultiScaleRoIAlign(names, 7, 2), tvops.MultiScaleRoIAlign(names, 7, 2)
    with autocast(device, dtype):
        ours = ours_m(feats, boxes, sizes)
        theirs = theirs_m(feats, boxes, sizes)
    assert_same_under_autocast(ours, theirs, device, dtype)
    grad = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, list(feats.values()), grad),
                    torch.autograd.grad(theirs, list(feats.values()), grad)):
        assert_same_under_autocast(a, b, device, dtype)
