"""decode_boxes / encode_boxes / BoxCoder against torchvision's BoxCoder and the reference.

Float32/float64 follow torchvision's operation order exactly: with exp/log arguments of 0 the
results are bitwise equal; otherwise the only difference is the rounding of exp/log (torch's
vectorised exp/log vs ours), bounded below in ulps of the coordinates involved. The oracle is
torchvision on the CPU: on CUDA, torch divides by a Python scalar as a * (1 / b), which rounds
differently; our kernels divide on both devices.
"""
import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.ops import clip_boxes_to_image

from maskrcnn_fast.ops import BoxCoder, decode_boxes, encode_boxes
from maskrcnn_fast.ops import reference as ref

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (1 / 3, 0.7, 3.0, 1.1)]
CLIP = math.log(1000.0 / 16)


def _boxes(k, device, dtype=torch.float32, scale=600.0):
    xy = torch.rand(k, 2, dtype=torch.float64, device=device) * scale - 50
    wh = torch.rand(k, 2, dtype=torch.float64, device=device) * scale / 2 + 1
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def _same(a, b):
    return torch.equal(a.cpu(), b.cpu())


def _tv_decode(rel_codes, boxes, weights, image_size=None):
    out = TVBoxCoder(weights).decode_single(rel_codes.cpu(), boxes.cpu())
    if image_size is not None:
        k = out.shape[0]
        out = clip_boxes_to_image(out.reshape(k, -1, 4), image_size).reshape(k, -1)
    return out


def _assert_within(got, expected, scale, eps, ulps):
    """|got - expected| <= ulps * eps * scale elementwise (NaN in the same places)."""
    got, expected, scale = got.cpu(), expected.cpu(), scale.cpu()
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.equal(got.isnan(), expected.isnan())
    ok = ~expected.isnan()
    err = (got.double() - expected.double()).abs()[ok]
    tol = (ulps * eps * scale.double())[ok]
    assert bool((err <= tol).all()), f"max excess {(err - tol).max().item()}"


def _pair_scale(boxes_out):
    # Scale of a decoded coordinate: |x1| + |x2| bounds both the centre and the half size.
    k = boxes_out.shape[0]
    b = boxes_out.double().reshape(k, -1, 4).abs()
    sx, sy = b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]
    return torch.stack([sx, sy, sx, sy], dim=-1).reshape(k, -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("image_size", [None, (480, 641)])
def test_decode_matches_torchvision(device, seed, dtype, weights, image_size):
    k, c = 300, 3
    boxes = _boxes(k, device, dtype)
    codes = torch.randn(k, 4 * c, dtype=dtype, device=device)
    codes[::7, 2::4] *= 40  # some dw, dh beyond bbox_xform_clip
    got = decode_boxes(codes, boxes, weights, CLIP, image_size)
    expected = _tv_decode(codes, boxes, weights, image_size)
    eps = torch.finfo(dtype).eps
    _assert_within(got, expected, _pair_scale(_tv_decode(codes, boxes, weights)), eps, 4)
    # Without exp rounding (dw = dh = 0) the arithmetic is torchvision's, bit for bit.
    codes[:, 2::4] = 0
    codes[:, 3::4] = 0
    got = decode_boxes(codes, boxes, weights, CLIP, image_size)
    assert _same(got, _tv_decode(codes, boxes, weights, image_size))


@pytest.mark.parametrize("image_size", [None, (300, 200)])
def test_decode_matches_reference_float64(device, seed, image_size):
    k, c = 200, 5
    boxes = _boxes(k, device, torch.float64)
    codes = torch.randn(k, 4 * c, dtype=torch.float64, device=device) * 2
    got = decode_boxes(codes, boxes, WEIGHTS[1], CLIP, image_size)
    expected = ref.decode_boxes(codes, boxes, WEIGHTS[1], CLIP, image_size)
    scale = _pair_scale(ref.decode_boxes(codes, boxes, WEIGHTS[1], CLIP))
    _assert_within(got, expected, scale, torch.finfo(torch.float64).eps, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_reduced_precision(device, seed, dtype):
    # Computed in float, rounded once: within one output ulp of the float64 reference (plus
    # float rounding); torchvision rounds after every op, so it is only within a few ulps.
    k = 200
    boxes = _boxes(k, device, dtype, scale=200.0)
    codes = (torch.randn(k, 8, device=device) * 0.5).to(dtype)
    size = (150, 180)
    got = decode_boxes(codes, boxes, WEIGHTS[1], CLIP, size)
    expected = ref.decode_boxes(codes.double(), boxes.double(), WEIGHTS[1], CLIP, size)
    scale = _pair_scale(ref.decode_boxes(codes.double(), boxes.double(), WEIGHTS[1], CLIP))
    ulp_out = torch.finfo(dtype).eps * expected.abs().clamp(min=torch.finfo(dtype).tiny)
    err = (got.double() - expected).abs()
    assert bool((err <= ulp_out + 8 * torch.finfo(torch.float32).eps * scale).all())
    tv = _tv_decode(codes, boxes, WEIGHTS[1], size)
    _assert_within(got, tv, scale, torch.finfo(dtype).eps, 8)


def test_decode_mixed_dtypes(device, seed):
    boxes = _boxes(50, device, torch.float64)
    codes = torch.randn(50, 4, device=device)
    codes[:, 2:] = 0
    got = decode_boxes(codes, boxes, WEIGHTS[0], CLIP, (500, 500))
    assert got.dtype == torch.float32
    assert _same(got, _tv_decode(codes, boxes, WEIGHTS[0], (500, 500)))


def test_decode_edge_cases(device):
    f = torch.float32
    # no boxes, and no classes
    assert decode_boxes(torch.zeros(0, 8, device=device), torch.zeros(0, 4, device=device)).shape == (0, 8)
    assert decode_boxes(torch.zeros(3, 0, device=device), torch.zeros(3, 4, device=device)).shape == (3, 0)
    # one box, degenerate (zero width), wholly outside the image, huge dw (clamped)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [5.0, 5.0, 5.0, 9.0],
                          [-500.0, -400.0, -300.0, -350.0], [700.0, 10.0, 900.0, 50.0]],
                         dtype=f, device=device)
    codes = torch.tensor([[0.1, -0.2, 0.3, 0.4], [0.5, 0.5, 2.0, 0.0],
                          [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1e6, math.inf]], dtype=f, device=device)
    for size in (None, (100, 640)):
        got = decode_boxes(codes, boxes, WEIGHTS[0], CLIP, size)
        expected = _tv_decode(codes, boxes, WEIGHTS[0], size)
        _assert_within(got, expected, _pair_scale(_tv_decode(codes, boxes, WEIGHTS[0])),
                       torch.finfo(f).eps, 4)
        assert got.isfinite().all()
    assert _same(decode_boxes(codes[2:3], boxes[2:3], WEIGHTS[0], CLIP, (100, 640)),
                 torch.zeros(1, 4))


def test_decode_nan_codes_give_nan(device):
    boxes = _boxes(3, device)
    codes = torch.zeros(3, 8, device=device)
    codes[0, 0] = math.nan  # dx: x1 and x2 of class 0
    codes[1, 7] = math.nan  # dh: y1 and y2 of class 1
    codes[2, 2] = -math.inf  # dw: zero width
    for size in (None, (50, 50)):
        got = decode_boxes(codes, boxes, WEIGHTS[0], CLIP, size).cpu()
        expected = _tv_decode(codes, boxes, WEIGHTS[0], size)
        assert torch.equal(got.isnan(), expected.isnan())
        assert got[0, [0, 2]].isnan().all() and got[1, [5, 7]].isnan().all()
        assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected))


def test_decode_non_contiguous(device, seed):
    boxes = _boxes(40, device).t().contiguous().t()
    codes = torch.randn(8, 40, device=device).t()
    codes[:, 2::4] = 0
    codes[:, 3::4] = 0
    assert not boxes.is_contiguous() and not codes.is_contiguous()
    assert _same(decode_boxes(codes, boxes, WEIGHTS[1], CLIP, (300, 300)),
                 _tv_decode(codes, boxes, WEIGHTS[1], (300, 300)))


def test_box_coder_api(device, seed):
    tv, ours = TVBoxCoder(WEIGHTS[1]), BoxCoder(WEIGHTS[1])
    boxes = [_boxes(k, device) for k in (5, 0, 7)]
    codes = torch.randn(12, 3 * 4, device=device)
    codes[:, 2::4] = 0
    codes[:, 3::4] = 0
    cpu_boxes = [b.cpu() for b in boxes]
    got = ours.decode(codes, boxes)
    assert got.shape == (12, 3, 4) and _same(got, tv.decode(codes.cpu(), cpu_boxes))
    clipped = ours.decode(codes, boxes, image_size=(200, 300))
    assert _same(clipped, clip_boxes_to_image(tv.decode(codes.cpu(), cpu_boxes), (200, 300)))
    empty = [torch.zeros(0, 4, device=device)]
    assert _same(ours.decode(torch.zeros(0, 4, device=device), empty),
                 tv.decode(torch.zeros(0, 4), [torch.zeros(0, 4)]))
    refs = [_boxes(k, device) for k in (5, 0, 7)]
    props = [r + 3 for r in refs]  # same sizes: dw = dh = log(1) = 0 exactly
    enc = ours.encode(refs, props)
    tv_enc = tv.encode([r.cpu() for r in refs], [p.cpu() for p in props])
    assert isinstance(enc, tuple) and len(enc) == 3
    for a, b in zip(enc, tv_enc):
        assert _same(a, b)
    with pytest.raises(TypeError, match="boxes"):
        ours.decode(codes, torch.cat(boxes))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_matches_torchvision(device, seed, dtype, weights):
    r, p = _boxes(300, device, dtype), _boxes(300, device, dtype)
    got = encode_boxes(r, p, weights)
    expected = TVBoxCoder(weights).encode_single(r.cpu(), p.cpu())
    assert _same(got[:, :2], expected[:, :2])  # no log involved
    _assert_within(got[:, 2:], expected[:, 2:], expected[:, 2:].abs(), torch.finfo(dtype).eps, 4)
    exact = ref.encode_boxes(r.double(), p.double(), weights)
    if dtype == torch.float64:
        _assert_within(got, exact, exact.abs(), torch.finfo(dtype).eps, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_encode_reduced_precision(device, seed, dtype):
    r, p = _boxes(100, device, dtype, 100.0), _boxes(100, device, dtype, 100.0)
    got = encode_boxes(r, p, WEIGHTS[1])
    expected = ref.encode_boxes(r.double(), p.double(), torch.tensor(WEIGHTS[1]).to(dtype).tolist())
    err = (got.double() - expected).abs()
    tol = torch.finfo(dtype).eps * expected.abs() + 16 * torch.finfo(torch.float32).eps * (
        1 + expected.abs())
    assert bool((err <= tol).all())


def test_encode_edge_cases(device):
    assert encode_boxes(torch.zeros(0, 4, device=device), torch.zeros(0, 4, device=device)).shape == (0, 4)
    r = torch.tensor([[0.0, 0.0, 10.0, 10.0], [math.nan, 0, 1, 1]], device=device)
    p = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0, 1, 1]], device=device)  # degenerate
    got = encode_boxes(r, p, WEIGHTS[0]).cpu()
    expected = TVBoxCoder(WEIGHTS[0]).encode_single(r.cpu(), p.cpu())
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected))
    mixed = encode_boxes(r[:1].double(), p[:1] + 1, WEIGHTS[2])
    assert mixed.dtype == torch.float64
    tv_mixed = TVBoxCoder(WEIGHTS[2]).encode_single(r[:1].double().cpu(), (p[:1] + 1).cpu())
    assert _same(mixed[:, :2], tv_mixed[:, :2])


def test_opcheck(device, seed):
    boxes = _boxes(6, device)
    codes = torch.randn(6, 8, device=device)
    op = torch.ops.maskrcnn_fast
    torch.library.opcheck(op.decode_boxes.default, (codes, boxes, [1.0, 1.0, 2.0, 2.0], CLIP, None))
    torch.library.opcheck(op.decode_boxes.default, (codes, boxes, [1.0, 1.0, 2.0, 2.0], CLIP, [40, 30]))
    torch.library.opcheck(op.decode_boxes.default, (codes.half(), boxes, [1.0] * 4, CLIP, [40, 30]))
    torch.library.opcheck(op.encode_boxes.default, (boxes, boxes + 1, [10.0, 10.0, 5.0, 5.0]))
    torch.library.opcheck(op.encode_boxes.default, (boxes.double(), boxes + 1, [1.0] * 4))


def test_bad_inputs(device):
    b = torch.zeros(4, 4, device=device)
    c = torch.zeros(4, 8, device=device)
    w = [1.0] * 4
    dec = lambda *a: torch.ops.maskrcnn_fast.decode_boxes(*a)  # noqa: E731
    with pytest.raises(RuntimeError, match="rel_codes"):
        dec(torch.zeros(4, 6, device=device), b, w, CLIP, None)
    with pytest.raises(RuntimeError, match="rel_codes"):
        dec(torch.zeros(4, 2, 4, device=device), b, w, CLIP, None)
    with pytest.raises(RuntimeError, match="rel_codes"):
        dec(c.int(), b, w, CLIP, None)
    with pytest.raises(RuntimeError, match="boxes"):
        dec(c, torch.zeros(4, 5, device=device), w, CLIP, None)
    with pytest.raises(RuntimeError, match="boxes"):
        dec(c, torch.zeros(16, device=device), w, CLIP, None)
    with pytest.raises(RuntimeError, match="boxes"):
        dec(c, b.long(), w, CLIP, None)
    with pytest.raises(RuntimeError, match="rel_codes and boxes"):
        dec(c, torch.zeros(3, 4, device=device), w, CLIP, None)
    with pytest.raises(RuntimeError, match="weights"):
        dec(c, b, [1.0] * 3, CLIP, None)
    with pytest.raises(RuntimeError, match="image_size"):
        dec(c, b, w, CLIP, [10, -1])
    with pytest.raises(RuntimeError, match="image_size"):
        dec(c, b, w, CLIP, [10])
    enc = torch.ops.maskrcnn_fast.encode_boxes
    with pytest.raises(RuntimeError, match="reference_boxes"):
        enc(torch.zeros(4, 5, device=device), b, w)
    with pytest.raises(RuntimeError, match="proposals"):
        enc(b, torch.zeros(4, 3, device=device), w)
    with pytest.raises(RuntimeError, match="proposals"):
        enc(b, b.int(), w)
    with pytest.raises(RuntimeError, match="reference_boxes and proposals"):
        enc(b, torch.zeros(5, 4, device=device), w)
    with pytest.raises(RuntimeError, match="weights"):
        enc(b, b, [1.0] * 5)
    if device == "cpu":
        with pytest.raises(RuntimeError, match="rel_codes and boxes"):
            dec(c, b.to("meta"), w, CLIP, None)
        with pytest.raises(RuntimeError, match="reference_boxes and proposals"):
            enc(b.to("meta"), b, w)


# ---- found by the differential fuzz tests (tests/fuzz), each as a minimal example: the comment
# says what failed and which side was wrong (reference, oracle or neither) ------------------

def test_reference_decode_boxes_empty(device):
    # Found: the reference reshaped with -1, ambiguous for K = 0 (RuntimeError), and its
    # clipping's `width` shadowed the column count (wrong shape with C = 0 and an image_size).
    for codes, boxes, size in [(torch.zeros(0, 8), torch.zeros(0, 4), None),
                               (torch.zeros(0, 0), torch.zeros(0, 4), (5, 5)),
                               (torch.zeros(1, 0), torch.zeros(1, 4), (0, 1)),
                               (torch.zeros(2, 4), torch.zeros(2, 4), (3, 7))]:
        codes, boxes = codes.to(device), boxes.to(device)
        want = ref.decode_boxes(codes, boxes, image_size=size)
        got = decode_boxes(codes, boxes, image_size=size)
        assert want.shape == got.shape == codes.shape
        assert torch.equal(got, want)


def test_encode_bfloat16_intermediate_overflow(device):
    # Found: bfloat16 encode gave +-Inf where the float64 reference is finite (3.3e38, inside
    # bfloat16's range). Not a kernel bug: half/bfloat16 are computed in float32 in
    # torchvision's operation order, wx * (dx_ctr) overflows first, exactly as torchvision's
    # own bfloat16 and float32 encodes do. The fuzz oracle now also accepts the float32
    # evaluation of the reference.
    r = torch.tensor([[3e38, 0.0, 3e38, 0.0]], dtype=torch.bfloat16, device=device)
    p = torch.tensor([[0.0, 0.0, 9.0, 0.0]], dtype=torch.bfloat16, device=device)
    w = (10.0, 10.0, 5.0, 5.0)
    got = encode_boxes(r, p, w).cpu()
    tv = TVBoxCoder(w).encode_single(r.cpu(), p.cpu())
    assert torch.equal(got.isnan(), tv.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(tv))
    assert got[0, 0] == math.inf and got[0, 2] == -math.inf
    assert torch.isfinite(ref.encode_boxes(r.double(), p.double(), w)[0, 0])


def test_decode_half_rounds_bbox_xform_clip(device):
    # Found: float16 decode 3 ulps from the float64 reference for a clamped dw. Not a kernel
    # bug: bbox_xform_clip is rounded to float16 before the clamp, as torch.clamp rounds a Python
    # scalar for a float16 tensor, so ours equals torchvision's float16 decode. The fuzz oracle
    # now gives the reference the rounded clip.
    clip = math.log(1000.0 / 16)
    b = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.half, device=device)
    codes = torch.tensor([[0.0, 0.0, 150.0, 0.0]], dtype=torch.half, device=device)
    got = decode_boxes(codes, b, (1.0, 1.0, 1.0, 1.0), clip).cpu()
    tv = TVBoxCoder((1.0, 1.0, 1.0, 1.0), clip).decode_single(codes.cpu(), b.cpu())
    assert torch.equal(got, tv)
    clip16 = float(torch.tensor(clip).half())
    want = ref.decode_boxes(codes.double().cpu(), b.double().cpu(), (1.0, 1.0, 1.0, 1.0), clip16)
    assert torch.equal(got, want.half())
