"""Fuzz: decode_boxes and encode_boxes against torchvision and the float64 reference
(tolerances of tests/test_box_coder.py); bad arguments raise naming the argument.
"""
import pytest
import torch
from hypothesis import given, strategies as st
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.ops import clip_boxes_to_image

from maskrcnn_fast.ops import decode_boxes, encode_boxes
from maskrcnn_fast.ops import reference as ref
from support.fuzz import CLIP, boxes, devices, dtypes, non_contiguous, tensor


WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (1 / 3, 0.7, 3.0, 1.1)]


F32_EPS = torch.finfo(torch.float32).eps


def _within(got, expected, tol, alt=None):
    """Equal (infinities included), both NaN, or |got - expected| <= tol, elementwise; or equal
    to ``alt`` (the float32-evaluated reference: half and bfloat16 are computed in float32 in
    torchvision's operation order, so an intermediate may overflow where float64 does not)."""
    got, expected = got.cpu().double(), expected.cpu().double()
    assert got.shape == expected.shape
    same = (got == expected) | (got.isnan() & expected.isnan())
    if alt is not None:
        alt = alt.cpu().double()
        same |= (got == alt) | (got.isnan() & alt.isnan())
    close = (got - expected).abs() <= tol
    bad = ~(same | close)
    assert not bool(bad.any()), (
        f"{int(bad.sum())} mismatches, e.g. got {got[bad][:4].tolist()} expected "
        f"{expected[bad][:4].tolist()} tol {torch.broadcast_to(torch.as_tensor(tol), got.shape)[bad][:4].tolist()}")


def _pair_scale(out):
    k = out.shape[0]
    b = out.double().reshape(k, out.shape[1] // 4, 4).abs()
    sx, sy = b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]
    return torch.stack([sx, sy, sx, sy], dim=-1).reshape(k, out.shape[1])


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_decode_boxes(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    k, c = draw(st.integers(0, 6)), draw(st.integers(0, 3))
    nonfinite = draw(st.booleans())
    b = draw(boxes(k, nonfinite=nonfinite)).to(dtype)
    codes = tensor(draw, (k, 4 * c), -4, 4, nonfinite)
    if draw(st.booleans()):
        codes[:, 2::4] *= 30  # beyond bbox_xform_clip, and exp overflow without it
    codes = codes.to(dtype)
    weights = draw(st.sampled_from(WEIGHTS))
    clip = draw(st.sampled_from([CLIP, 0.0, 2.5, 50.0]))
    size = draw(st.one_of(st.none(), st.tuples(st.integers(0, 90), st.integers(0, 90))))
    got = decode_boxes(non_contiguous(codes, draw).to(device), non_contiguous(b, draw).to(device),
                       weights, clip, size)
    assert got.shape == (k, 4 * c) and got.dtype == dtype and got.device.type == device
    got = got.cpu()
    exact = ref.decode_boxes(codes.double(), b.double(), weights, clip, size)
    scale = _pair_scale(ref.decode_boxes(codes.double(), b.double(), weights, clip))
    if dtype in (torch.float32, torch.float64):
        tv = TVBoxCoder(weights, clip).decode_single(codes, b)
        tv_scale = _pair_scale(tv)
        if size is not None:
            tv = clip_boxes_to_image(tv.reshape(k, c, 4), size).reshape(k, 4 * c)
        _within(got, tv, 4 * torch.finfo(dtype).eps * tv_scale)
        if dtype == torch.float64:
            _within(got, exact, 4 * torch.finfo(dtype).eps * scale)
    else:
        # Computed in float, rounded once: one output ulp plus float rounding of the scale.
        # bbox_xform_clip is rounded to the dtype first, as torch.clamp rounds a Python scalar
        # for a half tensor (torchvision's result, and ours).
        clip_r = float(torch.tensor(clip, dtype=torch.float64).to(dtype))
        exact = ref.decode_boxes(codes.double(), b.double(), weights, clip_r, size)
        scale = _pair_scale(ref.decode_boxes(codes.double(), b.double(), weights, clip_r))
        ulp_out = torch.finfo(dtype).eps * exact.abs().clamp(min=torch.finfo(dtype).tiny)
        alt = ref.decode_boxes(codes.float(), b.float(), weights, clip_r, size).to(dtype)
        _within(got, exact.to(dtype), ulp_out + 8 * F32_EPS * scale, alt)


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_encode_boxes(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    k = draw(st.integers(0, 6))
    nonfinite = draw(st.booleans())
    r = draw(boxes(k, nonfinite=nonfinite)).to(dtype)
    p = draw(boxes(k, nonfinite=nonfinite)).to(dtype)
    weights = draw(st.sampled_from(WEIGHTS))
    got = encode_boxes(non_contiguous(r, draw).to(device), non_contiguous(p, draw).to(device), weights)
    assert got.shape == (k, 4) and got.dtype == dtype and got.device.type == device
    got = got.cpu()
    w_dtype = torch.tensor(weights, dtype=torch.float64).to(dtype).tolist()
    exact = ref.encode_boxes(r.double(), p.double(), w_dtype)
    if dtype in (torch.float32, torch.float64):
        tv = TVBoxCoder(weights).encode_single(r, p)
        _within(got[:, :2], tv[:, :2], 0.0)  # no log: bit for bit
        _within(got[:, 2:], tv[:, 2:], 4 * torch.finfo(dtype).eps * tv[:, 2:].abs())
        if dtype == torch.float64:
            _within(got, exact, 4 * torch.finfo(dtype).eps * exact.abs())
    else:
        tol = torch.finfo(dtype).eps * exact.abs() + 16 * F32_EPS * (1 + exact.abs())
        alt = ref.encode_boxes(r.float(), p.float(), w_dtype).to(dtype)
        _within(got, exact.to(dtype), tol, alt)


@given(data=st.data())
def test_fuzz_box_errors(data):
    draw = data.draw
    k = draw(st.integers(0, 3))
    bad = draw(st.sampled_from(["ndim", "last", "int", "k", "weights", "size"]))
    codes, b = torch.zeros(k, 4), torch.zeros(k, 4)
    arg, weights, size = "rel_codes", WEIGHTS[0], None
    if bad == "ndim":
        codes = torch.zeros(k, 4, 1)
    elif bad == "last":
        codes, arg = torch.zeros(k, draw(st.sampled_from([1, 2, 3, 5, 7]))), "rel_codes"
    elif bad == "int":
        b, arg = torch.zeros(k, 4, dtype=torch.int64), "boxes"
    elif bad == "k":
        b, arg = torch.zeros(k + 1, 4), "rel_codes"
    elif bad == "weights":
        weights, arg = (1.0, 1.0, 1.0), "weights"
    else:
        size, arg = (-1, draw(st.integers(0, 5))), "image_size"
    with pytest.raises((RuntimeError, ValueError), match=arg):
        decode_boxes(codes, b, weights, CLIP, size)
    if bad in ("ndim", "int", "k", "weights"):
        with pytest.raises((RuntimeError, ValueError), match="reference_boxes|proposals|weights"):
            encode_boxes(codes if bad == "ndim" else b, torch.zeros(k + 2 * (bad == "k"), 4), weights)
