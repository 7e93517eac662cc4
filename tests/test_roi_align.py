"""roi_align against torchvision.ops.roi_align and the float64 reference, forward and backward.

The CPU kernel has three paths, all covered: NCHW read in place (few channels or few ROIs),
NCHW transposed to channels-last internally (many ROIs), and channels-last input.
"""
import math

import pytest
import torch
import torchvision
from torch.autograd import gradcheck, gradgradcheck
from torchvision import ops as tvops

import maskrcnn_fast  # noqa: F401
from maskrcnn_fast import ops
from maskrcnn_fast.ops import RoIAlign, reference, roi_align
from support.ops import LOW_DTYPES, QDTYPES, assert_same_under_autocast, autocast, fma_tol, quantize, random_rois

OPS = torch.ops.maskrcnn_fast


LAYOUTS = {
    # name: (channels, rois, channels_last)
    "nchw": (3, 12, False),
    "nchw_transposed": (20, 40, False),
    "channels_last": (20, 12, True),
}


def make_case(layout, dtype, device, scale, n=2, height=13, width=17):
    c, k, cl = LAYOUTS[layout]
    x = torch.randn(n, c, height, width, dtype=dtype, device=device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, random_rois(k, n, height, width, scale, dtype, device)


def assert_same_as_torchvision(ours, theirs, device, inputs, size=None, terms=1):
    """Bitwise on the CPU; on CUDA within support.ops.fma_tol: torchvision's kernel is compiled
    with FMA contraction, ours without. ``inputs``: the map (forward) or the output's gradient
    (backward, with ``terms`` ROIs adding into one pixel); ``size``: the map's longest side
    (default: the inputs' last two dimensions)."""
    size = max(inputs.shape[-2:]) if size is None else size
    values = inputs.detach().abs().max().item() if inputs.numel() else 0.0
    torch.testing.assert_close(ours, theirs, **fma_tol(device, ours.dtype, values, size, terms))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1 / 16])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_forward_matches_torchvision_and_reference(device, seed, layout, spatial_scale, sampling_ratio, aligned):
    for output_size in [(7, 7), (14, 14), (2, 3)]:
        args = (output_size, spatial_scale, sampling_ratio, aligned)
        x, rois = make_case(layout, torch.float32, device, spatial_scale)
        out = roi_align(x, rois, *args)
        assert out.shape == (rois.size(0), x.size(1)) + output_size
        assert_same_as_torchvision(out, torchvision.ops.roi_align(x, rois, *args), device, x)
        x64, rois64 = x.double(), rois.double()
        out64 = roi_align(x64, rois64, *args)
        assert_same_as_torchvision(out64, torchvision.ops.roi_align(x64, rois64, *args), device, x64)
        if output_size == (2, 3):  # the oracle itself; ours is already torchvision's, bitwise
            torch.testing.assert_close(out64, reference.roi_align(x64, rois64, *args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_backward_matches_torchvision(device, seed, layout, sampling_ratio, aligned):
    x, rois = make_case(layout, torch.float32, device, 0.5)
    x.requires_grad_(True)
    args = ((3, 4), 0.5, sampling_ratio, aligned)
    out = roi_align(x, rois, *args)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, x, grad)[0]
    theirs = torch.autograd.grad(torchvision.ops.roi_align(x, rois, *args), x, grad)[0]
    assert_same_as_torchvision(ours, theirs, device, grad, size=max(x.shape[-2:]), terms=len(rois))
    x64 = x.detach().double().requires_grad_(True)
    g64 = grad.double()
    ours64 = torch.autograd.grad(roi_align(x64, rois.double(), *args), x64, g64)[0]
    ref64 = torch.autograd.grad(reference.roi_align(x64, rois.double(), *args), x64, g64)[0]
    torch.testing.assert_close(ours64, ref64, rtol=1e-12, atol=1e-12)
    if device == "cpu":  # deterministic
        again = torch.autograd.grad(roi_align(x, rois, *args), x, grad)[0]
        assert torch.equal(ours, again)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(device, seed, aligned, sampling_ratio, channels_last):
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    rois = random_rois(4, 2, 6, 7, 1.0, torch.float64, device)

    def fn(z):
        return roi_align(z, rois, (2, 3), 1.0, sampling_ratio, aligned)

    assert gradcheck(fn, (x,))
    if sampling_ratio == 2:  # double backward: roi_align is the adjoint of its backward
        assert gradgradcheck(fn, (x,))


def test_boxes_as_list(device, seed):
    x = torch.randn(3, 4, 10, 12, device=device)
    boxes = [random_rois(k, 1, 10, 12, 0.5, device=device)[:, 1:] for k in (3, 0, 5)]
    out = roi_align(x, boxes, 5, 0.5, 2)
    assert_same_as_torchvision(out, torchvision.ops.roi_align(x, boxes, 5, 0.5, 2), device, x)
    assert out.shape == (8, 4, 5, 5)
    expected = reference.roi_align(x.double(), [b.double() for b in boxes], 5, 0.5, 2)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_half_precision(device, seed, dtype, layout):
    # torchvision's tolerance for half; torch's default bfloat16 tolerance for bfloat16.
    tol = dict(rtol=4e-3, atol=4e-3) if dtype == torch.float16 else dict(rtol=1.6e-2, atol=1e-5)
    x, rois = make_case(layout, dtype, device, 0.5)
    x = x.abs()  # torchvision's test uses rand in [0, 1)
    args = ((7, 7), 0.5, -1, True)
    out = roi_align(x, rois, *args)
    assert out.dtype == dtype
    expected = roi_align(x.float(), rois.float(), *args)
    torch.testing.assert_close(out.float(), expected, **tol)
    xg = x.detach().requires_grad_(True)
    grad = torch.rand_like(out)
    ours = torch.autograd.grad(roi_align(xg, rois, *args), xg, grad)[0]
    x32 = x.float().requires_grad_(True)
    expected = torch.autograd.grad(roi_align(x32, rois.float(), *args), x32, grad.float())[0]
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.float(), expected, **tol)


def test_channels_last_output_and_noncontiguous(device, seed):
    x = torch.randn(2, 20, 17, 13, device=device)
    rois = random_rois(9, 2, 13, 17, 0.5, device=device)
    expected = torchvision.ops.roi_align(x.transpose(2, 3).contiguous(), rois, 4, 0.5, 2)
    out = roi_align(x.transpose(2, 3), rois, 4, 0.5, 2)  # non-contiguous view
    assert_same_as_torchvision(out, expected, device, x)
    xcl = x.transpose(2, 3).contiguous(memory_format=torch.channels_last)
    out_cl = roi_align(xcl, rois, 4, 0.5, 2)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert_same_as_torchvision(out_cl, expected, device, x)
    sliced = torch.randn(2, 40, 13, 17, device=device)[:, ::2]
    assert_same_as_torchvision(roi_align(sliced, rois, 4, 0.5, 2),
                               torchvision.ops.roi_align(sliced.contiguous(), rois, 4, 0.5, 2), device, sliced)


@pytest.mark.parametrize("channels", [3, 20])
def test_edge_boxes(device, seed, channels):
    x = torch.randn(1, channels, 8, 9, device=device, dtype=torch.float64)
    rois = torch.tensor(
        [
            [0, 2.0, 2.0, 2.0, 5.0],  # zero width
            [0, 3.0, 4.0, 3.0, 4.0],  # a point
            [0, 6.0, 6.0, 2.0, 1.0],  # inverted
            [0, -5.0, -5.0, 3.0, 3.0],  # partly outside
            [0, 7.0, 6.0, 15.0, 12.0],  # partly outside, far corner
            [0, 20.0, 20.0, 30.0, 30.0],  # wholly outside
            [0, -30.0, -9.0, -10.0, -2.0],  # wholly outside
            [0, 0.0, 0.0, 9.0, 8.0],  # the whole map
            [0, -1.0, -1.0, 9.5, 8.5],  # the map plus the one-pixel margin
        ],
        device=device,
        dtype=torch.float64,
    )
    for aligned in (False, True):
        for sr in (-1, 0, 2):
            args = ((3, 2), 1.0, sr, aligned)
            out = roi_align(x, rois, *args)
            assert_same_as_torchvision(out, torchvision.ops.roi_align(x, rois, *args), device, x)
            torch.testing.assert_close(out, reference.roi_align(x, rois, *args), rtol=1e-12, atol=1e-12)
            assert out[5].abs().sum() == 0 and out[6].abs().sum() == 0
            xg = x.clone().requires_grad_(True)
            grad = torch.randn_like(out)
            ours = torch.autograd.grad(roi_align(xg, rois, *args), xg, grad)[0]
            theirs = torch.autograd.grad(torchvision.ops.roi_align(xg, rois, *args), xg, grad)[0]
            assert_same_as_torchvision(ours, theirs, device, grad, size=max(x.shape[-2:]), terms=len(rois))


def test_no_boxes_and_one_box(device):
    x = torch.randn(2, 5, 6, 7, device=device, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5, device=device), (7, 7))
    assert out.shape == (0, 5, 7, 7)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    one = torch.tensor([[1, 0.5, 1.0, 4.5, 5.0]], device=device)
    assert_same_as_torchvision(roi_align(x, one, 2), torchvision.ops.roi_align(x, one, 2), device, x)
    empty_map = torch.randn(1, 4, 0, 5, device=device)
    assert torch.equal(roi_align(empty_map, one[:, :] * 0, 2), torch.zeros(1, 4, 2, 2, device=device))


def test_large_adaptive_bins(device, seed):
    # 2x2 bins over 130 px: a 65x65 grid, more samples per bin than the CPU gathers per round.
    x = torch.randn(1, 2, 140, 140, dtype=torch.float64, device=device)
    rois = torch.tensor([[0, 3.3, 2.1, 133.3, 132.9]], dtype=torch.float64, device=device)
    args = (2, 1.0, -1, False)
    assert_same_as_torchvision(roi_align(x, rois, *args), torchvision.ops.roi_align(x, rois, *args), device, x)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e300])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_non_finite_boxes_give_zeros(device, bad, sampling_ratio):
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, device=device, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0], [0, 1.0, 1.0, bad, 6.0], [0, bad, 1.0, 6.0, 6.0]],
                        dtype=torch.float64, device=device)
    out = roi_align(x, rois, (1, 1) if bad == 1e300 else (4, 4), 1.0, sampling_ratio)
    if bad != 1e300:  # finite but huge: only must terminate, without NaN
        assert torch.equal(out[1:], torch.zeros_like(out[1:]))
    assert torch.isfinite(out).all()
    expected = reference.roi_align(x, rois, out.shape[-2:], 1.0, sampling_ratio)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("batch_index", [2.0, -1.0, 0.5, math.nan])
def test_invalid_batch_index(device, batch_index):
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    rois = torch.tensor([[1, 1.0, 1.0, 6.0, 6.0], [batch_index, 1.0, 1.0, 6.0, 6.0]], device=device)
    if device == "cpu":
        with pytest.raises(RuntimeError, match=r"rois\[1, 0\]"):
            roi_align(x, rois, 2)
        with pytest.raises(RuntimeError, match=r"rois\[1, 0\]"):
            OPS._roi_align_backward(torch.ones(2, 3, 2, 2), rois, 1.0, 2, 2, 2, 3, 8, 8, -1, False)
    else:  # no host sync on CUDA: the ROI reads nothing, writes zeros and gets no gradient
        out = roi_align(x, rois, 2)
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        out.sum().backward()
        expected = torch.autograd.grad(roi_align(x, rois[:1], 2).sum(), x)[0]
        torch.testing.assert_close(x.grad, expected)


def test_bad_arguments(device):
    x = torch.randn(1, 3, 8, 8, device=device)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]], device=device)
    op = OPS.roi_align
    cases = [
        (lambda: op(x[0], rois, 1.0, 2, 2, -1, False), "input"),
        (lambda: op(x.int(), rois, 1.0, 2, 2, -1, False), "input"),
        (lambda: op(x, rois[:, :4], 1.0, 2, 2, -1, False), "rois"),
        (lambda: op(x, rois[0], 1.0, 2, 2, -1, False), "rois"),
        (lambda: op(x, rois.double(), 1.0, 2, 2, -1, False), "rois"),
        (lambda: op(x, rois, 1.0, 0, 2, -1, False), "pooled_height"),
        (lambda: op(x, rois, 1.0, 2, -3, -1, False), "pooled_width"),
        (lambda: op(x, rois, 0.0, 2, 2, -1, False), "spatial_scale"),
        (lambda: op(x, rois, -0.5, 2, 2, -1, False), "spatial_scale"),
        (lambda: op(x, rois, math.nan, 2, 2, -1, False), "spatial_scale"),
        (lambda: op(x, rois, 1.0, 2, 2, -2, False), "sampling_ratio"),
        (lambda: roi_align(x, rois[:, 1:], 2), "boxes"),
        (lambda: roi_align(x, [rois], 2), r"boxes\[0\]"),
        (lambda: roi_align(x, rois, (2, 2, 2)), "output_size"),
        (lambda: OPS._roi_align_backward(torch.ones(1, 3, 2, 3, device=device), rois, 1.0, 2, 2, 1, 3, 8, 8, -1, False), "grad"),
        (lambda: OPS._roi_align_backward(torch.ones(1, 3, 2, 2, device=device), rois, 1.0, 2, 2, 1, 3, -8, 8, -1, False), "height"),
    ]
    for fn, name in cases:
        with pytest.raises((RuntimeError, ValueError), match=name):
            fn()
    if device == "cuda":
        with pytest.raises(RuntimeError, match="same device"):
            op(x, rois.cpu(), 1.0, 2, 2, -1, False)


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(device, seed, channels_last):
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    rois = random_rois(5, 2, 9, 10, 0.5, torch.float64, device)
    torch.library.opcheck(OPS.roi_align.default, (x, rois, 0.5, 3, 2, -1, True))
    grad = torch.randn(5, 4, 3, 2, dtype=torch.float64, device=device)
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    grad.requires_grad_(True)
    torch.library.opcheck(OPS._roi_align_backward.default, (grad, rois, 0.5, 3, 2, 2, 4, 9, 10, 2, False))


def test_module(device, seed):
    m = RoIAlign((3, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    tv = torchvision.ops.RoIAlign((3, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    assert repr(m) == repr(tv)
    x = torch.randn(2, 3, 10, 10, device=device)
    rois = random_rois(6, 2, 10, 10, 0.5, device=device)
    assert_same_as_torchvision(m(x, rois), tv(x, rois), device, x)


def test_reference_invalid_rois_give_zeros():
    # The reference follows the CUDA kernel (no host check): such ROIs read nothing.
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    rois = torch.tensor(
        [[1, 1.0, 1.0, 6.0, 6.0], [2, 1.0, 1.0, 6.0, 6.0], [0.5, 1.0, 1.0, 6.0, 6.0], [0, math.nan, 1.0, 6.0, 6.0]],
        dtype=torch.float64,
    )
    out = reference.roi_align(x, rois, 2, 1.0, 2)
    assert torch.equal(out[1:], torch.zeros_like(out[1:]))
    torch.testing.assert_close(out[:1], roi_align(x, rois[:1], 2, 1.0, 2), rtol=1e-12, atol=1e-12)


# ---- found by the differential fuzz tests (tests/fuzz), each as a minimal example: the comment
# says what failed and which side was wrong (reference, oracle or neither) ------------------

def test_reference_roi_align_backward_all_rois_empty():
    # Found: with aligned=True a zero-size ROI samples nothing (adaptive grid 0); when every ROI
    # was like that the reference's output left input's graph and autograd.grad raised. The
    # reference now keeps the output in the graph (zero gradient), as the fused op does.
    x = torch.rand(1, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    rois = torch.zeros(1, 5, dtype=torch.float64)
    grad = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    for fn in (roi_align, reference.roi_align):
        out = fn(x, rois, 1, 1.0, -1, True)
        assert out.tolist() == [[[[0.0]]]]
        assert torch.autograd.grad(out, x, grad)[0].tolist() == [[[[0.0]]]]


def test_roi_align_finite_rois_that_overflow_when_scaled(device):
    # Found: torchvision's CPU roi_align segfaults (out-of-bounds read through a NaN sample
    # position) on finite float32 ROIs whose corners overflow once scaled (3e38 * 2 = inf). Ours
    # gives zeros for them, as for non-finite ROIs, and the reference agrees. The fuzz test now
    # compares those rows with the reference only.
    x = torch.rand(1, 2, 8, 3, device=device)
    rois = torch.tensor([[0.0, 3e38, 4.0, 3e38, 0.9], [0.0, -2.0, 3e38, -0.95, 0.0],
                         [0.0, 6.0, 4.0, 12.0, 5.8]], device=device)
    out = roi_align(x, rois, (2, 1), 2.0, 1, True)
    assert bool((out[:2] == 0).all())
    want = reference.roi_align(x.double().cpu(), rois.double().cpu(), (2, 1), 2.0, 1, True)
    torch.testing.assert_close(out.cpu().double(), want, rtol=1e-5, atol=1e-5)


def test_roi_align_adaptive_grid_follows_the_input_dtype(device):
    # Found: float32 roi_align 0.31 away from the float64 reference. Not a kernel bug: the ROI
    # height 2.229 - 0.229 rounds above 2 in float32, so the adaptive grid has 3 samples per
    # side instead of 2; torchvision's float32 result is ours bit for bit. The fuzz test now
    # compares float32 with the reference evaluated in float32.
    x = torch.rand(1, 1, 1, 1, device=device)
    rois = torch.tensor([[0.0, 0.0, 0.229, 0.0, 2.229]], device=device)
    out = roi_align(x, rois, 1, 1.0, -1, False).cpu()
    assert torch.equal(out, torchvision.ops.roi_align(x.cpu(), rois.cpu(), 1, 1.0, -1, False))
    assert torch.equal(out, reference.roi_align(x.cpu(), rois.cpu(), 1, 1.0, -1, False))


def test_roi_align_inverted_roi_aligned_adaptive(device):
    # Found: torchvision's CPU roi_align raises ("cannot create std::vector larger than
    # max_size()": a negative adaptive grid) for an inverted ROI with aligned=True; ours gives
    # zeros (no samples, as torchvision's CUDA kernel does), like the reference. The fuzz test
    # now leaves such ROIs out of the torchvision comparison.
    x = torch.rand(1, 1, 1, 1, device=device, requires_grad=True)
    rois = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]], device=device)
    out = roi_align(x, rois, 1, 1.0, -1, True)
    assert out.tolist() == [[[[0.0]]]]
    assert torch.equal(out.detach().cpu(), reference.roi_align(x.detach().cpu(), rois.cpu(), 1, 1.0, -1, True))
    assert torch.autograd.grad(out, x, torch.ones_like(out))[0].tolist() == [[[[0.0]]]]


# ---- drop-in for torchvision.ops.roi_align: autocast, quantized tensors, TorchScript ----------
#
# torchvision registers an autocast kernel for roi_align that casts float16 / bfloat16 to float32
# and its result back to the input's dtype; on quantized tensors (CPU) roi_align is its
# qroi_align kernel: ours are bit for bit the same (see maskrcnn_fast/ops/_quantized.py).

@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("low", ["input", "rois", "both"])
@pytest.mark.parametrize("sampling_ratio, aligned", [(-1, False), (2, True), (0, True)])
def test_autocast_roi_align(device, seed, dtype, low, sampling_ratio, aligned):
    x = torch.randn(2, 6, 13, 17, device=device)
    rois = random_rois(20, 2, 13, 17, 0.5, device=device)
    if low in ("input", "both"):
        x = x.to(dtype)
    if low in ("rois", "both"):
        rois = rois.to(dtype)
    x.requires_grad_(True)
    args = ((3, 4), 0.5, sampling_ratio, aligned)
    with autocast(device, dtype):
        ours = ops.roi_align(x, rois, *args)
        theirs = tvops.roi_align(x, rois, *args)
        ours_list = ops.roi_align(x, [rois[rois[:, 0] == i, 1:] for i in range(2)], *args)
        theirs_list = tvops.roi_align(x, [rois[rois[:, 0] == i, 1:] for i in range(2)], *args)
    assert_same_under_autocast(ours, theirs, device, x.dtype)
    assert_same_under_autocast(ours_list, theirs_list, device, x.dtype)
    grad = torch.randn_like(ours)
    g_ours = torch.autograd.grad(ours, x, grad)[0]
    g_theirs = torch.autograd.grad(theirs, x, grad)[0]
    assert_same_under_autocast(g_ours, g_theirs, device, x.dtype)


@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("scale, zero_point", [(1.0, 0), (2.0, 10), (0.1, 50), (0.37, 3)])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio, spatial_scale", [(-1, 1.0), (2, 0.5), (0, 0.25)])
def test_quantized_roi_align_matches_torchvision(seed, qdtype, scale, zero_point, aligned, sampling_ratio,
                                                 spatial_scale):
    x = torch.randint(0, 100, (1, 3, 11, 13)).float() * scale
    qx = quantize(x, scale, zero_point, qdtype)
    rois = random_rois(40, 1, 11, 13, spatial_scale)
    qrois = quantize(rois, scale, zero_point, qdtype)
    args = ((3, 4), spatial_scale, sampling_ratio, aligned)
    theirs = tvops.roi_align(qx, qrois, *args)
    for ours in (ops.roi_align(qx, qrois, *args), ops.RoIAlign(*args)(qx, qrois),
                 torch.ops.maskrcnn_fast.roi_align(qx, qrois, spatial_scale, 3, 4, sampling_ratio, aligned),
                 ops.roi_align(qx, qrois.dequantize(), *args)):  # float ROIs too (torchvision refuses them)
        assert ours.dtype == theirs.dtype and ours.is_quantized
        assert (ours.q_scale(), ours.q_zero_point()) == (theirs.q_scale(), theirs.q_zero_point())
        assert torch.equal(ours.int_repr(), theirs.int_repr())


@pytest.mark.parametrize("qdtype", QDTYPES)
def test_quantized_roi_align_several_images(seed, qdtype):
    """torchvision's qroi_align takes one image; ours takes a batch, reading the batch index:
    each image's rows are torchvision's on that image alone."""
    scale, zero_point = 0.5, 4
    x = torch.randint(0, 60, (3, 4, 9, 12)).float() * scale
    qx = quantize(x, scale, zero_point, qdtype)
    rois = random_rois(30, 3, 9, 12, 1.0)
    qrois = quantize(rois, 0.5, 0, qdtype)  # batch indices 0, 1, 2 exact
    with pytest.raises(RuntimeError, match="one image"):
        tvops.roi_align(qx, qrois, 3)
    ours = ops.roi_align(qx, qrois, (3, 3), 1.0, 2, True)
    index = qrois.dequantize()[:, 0].long()
    for i in range(3):
        theirs = tvops.roi_align(qx[i: i + 1], quantize(qrois.dequantize()[index == i], 0.5, 0, qdtype),
                                 (3, 3), 1.0, 2, True)
        assert torch.equal(ours.int_repr()[index == i], theirs.int_repr())
    bad = rois.clone()
    bad[3, 0] = 3.0
    with pytest.raises(RuntimeError, match=r"rois\[3, 0\]"):
        ops.roi_align(qx, quantize(bad, 0.5, 0, qdtype), 3)


def test_script_quantized_roi_align(seed):
    """The scripted op takes quantized tensors too (torchvision's scripted roi_align does not:
    its quantized branch is Python only)."""
    qx = quantize(torch.randint(0, 50, (1, 2, 8, 8)).float(), 1.0, 0, torch.quint8)
    qrois = quantize(random_rois(10, 1, 8, 8, 1.0), 1.0, 0, torch.quint8)
    scripted = torch.jit.script(ops.roi_align)
    assert torch.equal(scripted(qx, qrois, 3).int_repr(), tvops.roi_align(qx, qrois, 3).int_repr())
