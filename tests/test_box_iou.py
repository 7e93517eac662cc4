"""box_iou against torchvision.ops.box_iou (CPU, the oracle) and the pure-PyTorch reference.

float32 / float64 / half / bfloat16 results must be bitwise torchvision's (NaN where it gives
NaN): the kernel follows its order of operations, half subtractions included.
"""
import pytest
import torch
import torchvision
from torchvision import ops as tvops

from maskrcnn_fast import ops
from maskrcnn_fast.ops import box_iou
from maskrcnn_fast.ops import reference as ref
from support.ops import LOW_DTYPES, autocast, boxes_in_square, grid_boxes, random_boxes


def _tv(b1, b2):
    return torchvision.ops.box_iou(b1.cpu(), b2.cpu())


def _same(a, b):
    """Bitwise equal, NaN where the other has NaN."""
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("m, n", [(1, 1), (7, 300), (40, 2000), (0, 5), (5, 0), (0, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torchvision(device, seed, m, n, dtype):
    b1, b2 = random_boxes(m, device, dtype), random_boxes(n, device, dtype)
    out = box_iou(b1, b2)
    assert out.device == b1.device
    _same(out, _tv(b1, b2))
    _same(out, ref.box_iou(b1, b2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_reference(device, seed, dtype):
    b1, b2 = random_boxes(30, device, dtype), random_boxes(500, device, dtype)
    want = ref.box_iou(b1.double(), b2.double())
    torch.testing.assert_close(box_iou(b1, b2).double(), want, rtol=1e-5, atol=1e-6)


def test_grid_boxes_ties_and_shared_edges(device, seed):
    b1, b2 = grid_boxes(50, 8.0, device=device), grid_boxes(400, 8.0, device=device)
    _same(box_iou(b1, b2), _tv(b1, b2))


def test_degenerate_outside_and_inverted(device):
    b = torch.tensor(
        [
            [10.0, 10.0, 10.0, 30.0],  # zero width
            [10.0, 10.0, 10.0, 10.0],  # a point
            [-50.0, -50.0, -10.0, -10.0],  # outside the image
            [20.0, 20.0, 10.0, 10.0],  # inverted (negative width and height)
            [20.0, 5.0, 10.0, 50.0],  # inverted width only: negative area
            [0.0, 0.0, 1e30, 1e30],  # area overflows to inf
            [0.0, 0.0, 100.0, 100.0],
            [float("nan"), 0.0, 5.0, 5.0],
            [0.0, 0.0, float("inf"), 5.0],
        ],
        device=device,
    )
    out = box_iou(b, b)
    _same(out, _tv(b, b))
    assert out[1, 1].isnan() and out[6, 6] == 1  # 0 / 0 for two points; a box with itself


def test_non_contiguous(device, seed):
    b1 = random_boxes(40, device).t().contiguous().t()
    b2 = random_boxes(300, device).repeat(1, 2)[:, ::2]
    assert not b1.is_contiguous() and not b2.is_contiguous()
    _same(box_iou(b1, b2), _tv(b1, b2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(device, seed, dtype):
    b1, b2 = random_boxes(20, device, dtype), random_boxes(300, device, dtype)
    out = box_iou(b1, b2)
    assert out.dtype == torch.float32  # torchvision upcasts half
    _same(out, _tv(b1, b2))
    _same(out, ref.box_iou(b1, b2))
    torch.testing.assert_close(out, ref.box_iou(b1.double(), b2.double()).float(), rtol=0, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16])
def test_integer_boxes(device, seed, dtype):
    b1, b2 = grid_boxes(20, 8.0).to(dtype).to(device), grid_boxes(100, 8.0).to(dtype).to(device)
    out = box_iou(b1, b2)
    assert out.dtype == torch.float32
    _same(out, _tv(b1, b2))
    _same(out, ref.box_iou(b1, b2))


def test_mixed_dtypes_promote(device, seed):
    b1, b2 = random_boxes(10, device, torch.float32), random_boxes(50, device, torch.float64)
    out = box_iou(b1, b2)
    assert out.dtype == torch.float64
    _same(out, box_iou(b1.double(), b2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_opcheck(device, seed, dtype):
    b1, b2 = random_boxes(6, device, dtype), random_boxes(11, device, dtype)
    torch.library.opcheck(torch.ops.maskrcnn_fast.box_iou.default, (b1, b2))
    torch.library.opcheck(torch.ops.maskrcnn_fast.box_iou.default, (b1[:0], b2))


def test_compile(device, seed):
    b1, b2 = random_boxes(6, device), random_boxes(11, device)
    f = torch.compile(box_iou, fullgraph=True, backend="eager")
    _same(f(b1, b2), _tv(b1, b2))


@pytest.mark.parametrize(
    "b1, b2, match",
    [
        (torch.zeros(4), torch.zeros(3, 4), "boxes1"),
        (torch.zeros(2, 5), torch.zeros(3, 4), "boxes1"),
        (torch.zeros(2, 4), torch.zeros(3, 4, 1), "boxes2"),
        (torch.zeros(2, 4), torch.zeros(3, 3), "boxes2"),
        (torch.zeros(2, 4, dtype=torch.int64), torch.zeros(3, 4), "boxes1"),
        (torch.zeros(2, 4), torch.zeros(3, 4, dtype=torch.float64), "boxes1 and boxes2"),
    ],
)
def test_bad_input(device, b1, b2, match):
    # the op itself (the wrapper promotes dtypes and upcasts integers)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.maskrcnn_fast.box_iou(b1.to(device), b2.to(device))


def test_bad_input_wrapper(device):
    with pytest.raises(RuntimeError, match="boxes2"):
        box_iou(torch.zeros(2, 4, device=device), torch.zeros(3, 5, device=device))


@pytest.mark.cuda
def test_device_mismatch():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    with pytest.raises(RuntimeError, match="boxes1 and boxes2"):
        torch.ops.maskrcnn_fast.box_iou(torch.zeros(2, 4), torch.zeros(3, 4, device="cuda"))


# ---- drop-in for torchvision.ops.box_iou: autocast, box formats and shapes ---------------------

@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("mixed", [False, True])
def test_autocast_box_iou(device, seed, dtype, mixed):
    a = boxes_in_square(30, device=device, dtype=dtype)
    b = boxes_in_square(40, device=device, dtype=torch.float32 if mixed else dtype)
    with autocast(device, dtype):
        ours, theirs = ops.box_iou(a, b), tvops.box_iou(a, b)
    assert ours.dtype == theirs.dtype == torch.float32
    tol = 0 if device == "cpu" else 1e-6
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64, torch.uint8])
def test_box_iou_formats_match_torchvision(device, seed, fmt, dtype):
    """torchvision's results, except for uint8 boxes, whose differences torchvision takes in
    uint8 (wrapping around below 0): ours are exact, torchvision's on the same boxes as int64."""
    a = boxes_in_square(20, 60.0, device)
    b = boxes_in_square(30, 60.0, device)
    if fmt != "xyxy":  # (x1, y1, w, h) or (cx, cy, w, h)
        a = torch.cat([a[:, :2], a[:, 2:] - a[:, :2]], 1)
        b = torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1)
    a, b = (t.round() if not dtype.is_floating_point else t for t in (a, b))
    a, b = a.to(dtype), b.to(dtype)
    oracle = (lambda t: t.long()) if dtype == torch.uint8 else (lambda t: t)
    tol = dict(rtol=0, atol=0) if device == "cpu" else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ops.box_iou(a, b, fmt), tvops.box_iou(oracle(a), oracle(b), fmt), **tol)
    # batched [..., N, 4], broadcast as torchvision does
    a3, b3 = a.reshape(2, 10, 4), b.reshape(3, 1, 10, 4)
    torch.testing.assert_close(ops.box_iou(a3, b3, fmt), tvops.box_iou(oracle(a3), oracle(b3), fmt), **tol)


def test_box_iou_rotated_formats_raise():
    with pytest.raises(ValueError, match="rotated"):
        ops.box_iou(torch.rand(3, 5), torch.rand(4, 5), fmt="cxcywhr")
    with pytest.raises(ValueError, match="fmt"):
        ops.box_iou(torch.rand(3, 4), torch.rand(4, 4), fmt="yxyx")
