"""packed_mask_targets: bitwise our mask_targets on the dense, nearest-resized masks, bitwise
torchvision's transform (its mask resize) + project_masks_on_boxes, and the float64 reference;
the CPU kernel against the emulated CUDA kernel (``emu``) and the GPU (``cuda``), bitwise."""
import pytest
import torch
from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project
from torchvision.models.detection.transform import _resize_image_and_masks as tv_resize

import maskrcnn_fast  # noqa: F401
from maskrcnn_fast import emulated
from maskrcnn_fast.ops import mask_targets, packed_mask_targets
from maskrcnn_fast.ops import reference as ref
from support import CUDA_AVAILABLE
from support.ops import RESIZES, dense_mask_targets, dense_masks, packed_boxes, packed_masks

OP = torch.ops.maskrcnn_fast.packed_mask_targets.default
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _case(device, n=24, k=60, **kw):
    data, instances = packed_masks(n, **kw)
    index = torch.randint(0, n, (k,))
    boxes = packed_boxes(instances, index)
    return data.to(device), instances.to(device), boxes.to(device), index.to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [28, 5, 1])
def test_matches_mask_targets_on_dense_resized_masks(device, seed, dtype, m):
    data, instances, boxes, index = _case(device)
    boxes = boxes.to(dtype)
    out = packed_mask_targets(data, instances, boxes, index, m)
    assert out.shape == (index.shape[0], m, m) and out.dtype == dtype
    assert torch.equal(out, dense_mask_targets(data, instances, boxes, index, m))


@pytest.mark.parametrize("resize", RESIZES)
def test_every_resize_kind(device, seed, resize):
    data, instances, boxes, index = _case(device, n=12, k=40, resize=resize)
    for dtype in (torch.float32, torch.float64):
        b = boxes.to(dtype)
        assert torch.equal(packed_mask_targets(data, instances, b, index, 28),
                           dense_mask_targets(data, instances, b, index, 28))


def test_matches_torchvision_resize_and_project(seed):
    """torchvision's own path: its transform's mask resize (scale_factor, recompute_scale_factor
    True) of the full-size masks of one image, then project_masks_on_boxes: bitwise."""
    for _ in range(6):
        h, w = torch.randint(8, 90, (2,)).tolist()
        g = int(torch.randint(1, 6, ()))
        full = (torch.rand(g, h // 4 + 1, w // 4 + 1) > 0.5).repeat_interleave(4, 1).repeat_interleave(4, 2)
        full = full[:, :h, :w].to(torch.uint8)
        full[torch.rand(full.shape) > 0.95] ^= 1
        min_size, max_size = int(torch.randint(10, 120, ())), int(torch.randint(40, 200, ()))
        _, target = tv_resize(torch.zeros(3, h, w), min_size, max_size, {"masks": full.clone()})
        resized = target["masks"]
        oh, ow = resized.shape[-2:]
        data, rows = _pack_tight(full, (oh, ow))
        k = 30
        matched = torch.randint(0, g, (k,))
        boxes = packed_boxes(rows, matched)
        for dtype in (torch.float32, torch.float64):
            b = boxes.to(dtype)
            out = packed_mask_targets(data, rows, b, matched, 28)
            assert torch.equal(out, tv_project(resized, b, matched, 28))
            assert torch.equal(out, mask_targets([resized], b, matched, 28))


def _pack_tight(full, out_size):
    """Dense masks [G, H, W] -> (data, instances): each mask as its tight crop (an empty mask as
    width = height = 0)."""
    g, h, w = full.shape
    data, rows, end = [], [], 0
    for m in full:
        ys, xs = torch.nonzero(m, as_tuple=True)
        if ys.numel() == 0:
            rows.append([end, 0, 0, 0, 0, h, w, *out_size])
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        crop = m[y0:y1, x0:x1].flatten()
        rows.append([end, x0, y0, x1 - x0, y1 - y0, h, w, *out_size])
        data.append(crop)
        end += crop.numel()
    data = torch.cat(data) if data else torch.zeros(0, dtype=torch.uint8)
    return data, torch.tensor(rows, dtype=torch.int64).reshape(g, 9)


def test_flipped_crop_is_another_crop(device, seed):
    """A horizontal flip of the source frame flips the crop and moves it to W - x0 - width:
    the targets are those of the flipped dense masks."""
    data, instances, boxes, index = _case(device, n=10, k=40)
    flipped_data = data.clone()
    flipped = instances.clone()
    for n, (off, x0, y0, cw, ch, h, w, oh, ow) in enumerate(instances.tolist()):
        flipped_data[off:off + cw * ch] = data[off:off + cw * ch].reshape(ch, cw).flip(1).flatten()
        flipped[n, 1] = w - x0 - cw
    # the flipped crops describe the flipped full-size masks
    for d, f in zip(dense_masks(data, instances, resized=False), dense_masks(flipped_data, flipped, resized=False)):
        assert torch.equal(d.flip(1), f)
    out = packed_mask_targets(flipped_data, flipped, boxes, index, 14)
    assert torch.equal(out, dense_mask_targets(flipped_data, flipped, boxes, index, 14))


def test_reference(device, seed):
    data, instances, boxes, index = _case(device)
    out = packed_mask_targets(data, instances, boxes.double(), index, 28)
    torch.testing.assert_close(ref.packed_mask_targets(data, instances, boxes.double(), index, 28), out,
                               rtol=0, atol=1e-12)
    out32 = packed_mask_targets(data, instances, boxes, index, 28)
    got = ref.packed_mask_targets(data, instances, boxes, index, 28)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, out32, rtol=0, atol=1e-5)
    for dtype in (torch.float16, torch.bfloat16):
        assert ref.packed_mask_targets(data, instances, boxes.to(dtype), index, 7).dtype == dtype


def test_bool_and_non_binary_data(device, seed):
    data, instances, boxes, index = _case(device)
    out = packed_mask_targets(data, instances, boxes, index, 14)
    assert torch.equal(packed_mask_targets(data.bool(), instances, boxes, index, 14), out)
    values, instances, boxes, index = _case(device, values=True)
    out = packed_mask_targets(values, instances, boxes, index, 14)
    assert torch.equal(out, dense_mask_targets(values, instances, boxes, index, 14))
    # the reference in the same compute dtype (float32: the adaptive grid and the sample positions
    # of float64 boxes may differ from float32's, as for mask_targets)
    torch.testing.assert_close(ref.packed_mask_targets(values, instances, boxes, index, 14), out,
                               rtol=0, atol=1e-5 * 255)


def test_non_contiguous_inputs(device, seed):
    data, instances, boxes, index = _case(device)
    out = packed_mask_targets(data, instances, boxes, index, 14)
    sparse_data = torch.stack([data, data], 1)[:, 1]
    rows = instances.t().contiguous().t()
    b = torch.stack([boxes, boxes], -1)[..., 0]
    i = torch.stack([index, index], -1)[:, 0]
    assert not (sparse_data.is_contiguous() or rows.is_contiguous() or b.is_contiguous() or i.is_contiguous())
    assert torch.equal(packed_mask_targets(sparse_data, rows, b, i, 14), out)
    torch.testing.assert_close(ref.packed_mask_targets(sparse_data, rows, b, i, 14), out, rtol=0, atol=1e-5)


def test_empty(device):
    data, instances, boxes, index = _case(device, n=5, k=8)
    none = torch.empty(0, dtype=torch.int64, device=device)
    assert packed_mask_targets(data, instances, boxes[:0], none, 28).shape == (0, 28, 28)
    empty_rows = torch.empty(0, 9, dtype=torch.int64, device=device)
    no_data = torch.empty(0, dtype=torch.uint8, device=device)
    assert OP(no_data, empty_rows, boxes[:0], none, 7).shape == (0, 7, 7)
    assert ref.packed_mask_targets(no_data, empty_rows, boxes[:0], none, 7).shape == (0, 7, 7)
    # empty masks (width = height = 0, offset at the end), empty frames, frames resized to 0
    rows = torch.tensor([[0, 0, 0, 0, 0, 10, 12, 20, 24], [0, 3, 2, 0, 0, 10, 12, 10, 12],
                         [0, 0, 0, 0, 0, 0, 5, 0, 5], [0, 0, 0, 2, 2, 4, 4, 0, 0],
                         [0, 0, 0, 2, 2, 4, 4, 3, 0]], device=device)
    ones = torch.ones(4, dtype=torch.uint8, device=device)
    b = torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 5, device=device)
    idx = torch.arange(5, device=device)
    assert torch.equal(OP(ones, rows, b, idx, 7), torch.zeros(5, 7, 7, device=device))
    assert torch.equal(OP(no_data, rows[:3], b[:3], idx[:3], 7), torch.zeros(3, 7, 7, device=device))
    assert torch.equal(ref.packed_mask_targets(ones, rows, b, idx, 7), torch.zeros(5, 7, 7, device=device))


def test_degenerate_outside_and_nan_boxes(device):
    # one instance: a 6 x 8 crop of ones at (2, 3) in a 10 x 12 frame, resized to 15 x 18
    rows = torch.tensor([[0, 2, 3, 8, 6, 10, 12, 15, 18]], device=device)
    data = torch.ones(48, dtype=torch.uint8, device=device)
    boxes = torch.tensor(
        [
            [6.0, 7.0, 6.0, 7.0],  # a point in the crop: a 1x1 pixel box
            [6.0, 6.0, 6.0, 12.0],  # zero width
            [-30.0, -30.0, -20.0, -20.0],  # wholly above-left of the frame
            [19.5, 16.0, 40.0, 30.0],  # wholly below-right
            [-5.0, -5.0, 25.0, 25.0],  # covers the frame and more
            [0.0, 0.0, 2.0, 2.0],  # in the frame, outside the crop
            [float("nan"), 0.0, 5.0, 5.0],
            [0.0, 0.0, float("inf"), 5.0],
        ],
        device=device,
    )
    idx = torch.zeros(boxes.shape[0], dtype=torch.int64, device=device)
    out = packed_mask_targets(data, rows, boxes, idx, 7)
    assert torch.equal(out, dense_mask_targets(data, rows, boxes, idx, 7))
    ones = torch.ones(2, 7, 7, device=device)
    torch.testing.assert_close(out[:2], ones, rtol=0, atol=1e-6)
    assert torch.all(out[2] == 0) and torch.all(out[3] == 0) and torch.all(out[5] == 0)
    assert 0 < float(out[4].mean()) < 1
    assert torch.all(out[6:] == 0)  # non-finite boxes give zeros
    dense = dense_masks(data, rows)[0][None]
    tv = tv_project(dense.cpu(), boxes[:6].cpu(), idx[:6].cpu(), 7)
    assert torch.equal(out[:6].cpu(), tv)
    torch.testing.assert_close(ref.packed_mask_targets(data, rows, boxes, idx, 7), out, rtol=0, atol=1e-6)


def test_big_boxes_exceed_the_tap_table(device, seed):
    """Boxes whose sampling grid is large (over 1024 row + column taps at M = 28)."""
    data, instances = packed_masks(3, max_side=300, resize="up", empty_every=0)
    boxes = torch.tensor([[-10.0, -20.0, 410.0, 290.0], [5.0, 3.0, 900.0, 700.0], [0.0, 0.0, 600.0, 30.0]])
    index = torch.arange(3)
    data, instances, boxes, index = data.to(device), instances.to(device), boxes.to(device), index.to(device)
    out = packed_mask_targets(data, instances, boxes, index, 28)
    assert torch.equal(out, dense_mask_targets(data, instances, boxes, index, 28))
    torch.testing.assert_close(ref.packed_mask_targets(data, instances, boxes, index, 28), out, rtol=0, atol=1e-5)


def test_never_materialises_the_resized_frame(device, seed):
    """Frames resized to 30000 x 40000 (a dense uint8 mask would be 1.2 GB per instance, K x H' x
    W' far beyond memory): the op and the reference read the crops only."""
    n = 40
    rows = torch.zeros(n, 9, dtype=torch.int64)
    rows[:, 3:5] = 3  # 3 x 3 crops of ones
    rows[:, 0] = torch.arange(n) * 9
    rows[:, 1] = torch.randint(0, 2997, (n,))
    rows[:, 2] = torch.randint(0, 1997, (n,))
    rows[:, 5], rows[:, 6], rows[:, 7], rows[:, 8] = 2000, 3000, 30000, 40000
    data = torch.ones(9 * n, dtype=torch.uint8)
    # boxes around each crop, in the resized frame (x 15 and x 40/3)
    x = rows[:, 1].double() * 40000 / 3000
    y = rows[:, 2].double() * 15
    boxes = torch.stack([x - 5, y - 5, x + 45, y + 50], 1)
    index = torch.arange(n)
    out = packed_mask_targets(data.to(device), rows.to(device), boxes.to(device), index.to(device), 28)
    assert float(out.amax()) > 0.99 and bool((out.flatten(1).amax(1) > 0.99).all())
    got = ref.packed_mask_targets(data, rows, boxes, index, 28)
    torch.testing.assert_close(got, out.cpu(), rtol=0, atol=1e-5)


def test_opcheck(device, seed):
    data, instances, boxes, index = _case(device, n=6, k=8)
    torch.library.opcheck(OP, (data, instances, boxes, index, 7))
    torch.library.opcheck(OP, (data.bool(), instances, boxes.double(), index, 5))
    none = torch.empty(0, dtype=torch.int64, device=device)
    torch.library.opcheck(OP, (data, instances, boxes[:0], none, 3))


def test_compile_has_no_graph_break(device, seed):
    data, instances, boxes, index = _case(device, n=6, k=8)
    fn = torch.compile(lambda d, r, b, i: packed_mask_targets(d, r, b, i, 7), backend="eager", fullgraph=True,
                       dynamic=False)
    assert torch.equal(fn(data, instances, boxes, index), packed_mask_targets(data, instances, boxes, index, 7))


def _bad_rows(instances, data_size):
    """(name pattern, rows) with one bad row each: what the CPU rejects, the CUDA kernel zeros."""
    cases = []

    def bad(pattern, col, value, row=2):
        r = instances.clone()
        r[row, col] = value
        cases.append((pattern, r, row))

    w = int(instances[2, 6])
    bad(r"instances row 2: crop \(x0, y0, w, h\) = .* outside the .* source frame", 1, w)  # x0 + width > W
    bad("instances row 2: crop", 2, -1)  # y0 < 0
    bad("instances row 2: negative crop size", 3, -2)
    bad("instances row 2: crop bytes", 0, data_size)  # past the end
    bad("instances row 2: crop bytes", 0, -5)
    bad(r"instances row 2: the frame sizes", 7, -1)
    bad(r"instances row 2: the frame sizes", 8, 2 ** 40)
    bad(r"instances row 2: crop", 5, 0)  # the crop no longer fits the frame
    return cases


def _row2_not_empty(data, instances):
    """Row 2 made a 3 x 2 crop at (4, 5) in a 10 x 12 frame resized to 20 x 24, at data's end."""
    instances = instances.clone()
    instances[2] = torch.tensor([data.numel(), 4, 5, 3, 2, 10, 12, 20, 24])
    return torch.cat([data, torch.ones(6, dtype=torch.uint8)]), instances


def test_bad_input_names_the_argument(device, seed):
    data, instances = _row2_not_empty(*packed_masks(4))
    index = torch.tensor([0, 2, 3, 1, 2])
    boxes = packed_boxes(instances, index)
    data, instances, boxes, index = data.to(device), instances.to(device), boxes.to(device), index.to(device)
    ok = OP(data, instances, boxes, index, 7)
    bad = [
        ("data", (data.float(), instances, boxes, index, 7)),
        ("data", (data[None], instances, boxes, index, 7)),
        ("instances", (data, instances.int(), boxes, index, 7)),
        ("instances", (data, instances[:, :8], boxes, index, 7)),
        ("instances", (data, instances[0], boxes, index, 7)),
        ("boxes", (data, instances, boxes[:, :3], index, 7)),
        ("boxes", (data, instances, boxes.long(), index, 7)),
        ("instance_index", (data, instances, boxes, index.int(), 7)),
        ("instance_index", (data, instances, boxes, index[:-1], 7)),
        ("size", (data, instances, boxes, index, 0)),
        ("size", (data, instances, boxes, index, -3)),
    ]
    if device == "cpu":  # data-dependent: CUDA writes zeros instead (below)
        bad += [("instance_index", (data, instances, boxes, index + 2, 7)),
                ("instance_index", (data, instances, boxes, index - 1, 7))]
        bad += [(p, (data, r, boxes, index, 7)) for p, r, _ in _bad_rows(instances, data.numel())]
    for name, args in bad:
        with pytest.raises((RuntimeError, ValueError), match=name):
            OP(*args)
    for pattern, r, _ in _bad_rows(instances.cpu(), data.numel()):
        with pytest.raises(ValueError, match=pattern.split(":")[0]):
            ref.packed_mask_targets(data, r.to(device), boxes, index, 7)
    with pytest.raises(ValueError, match="instance_index"):
        ref.packed_mask_targets(data, instances, boxes, index + 2, 7)
    if device == "cuda":
        i2 = index.clone()
        i2[0], i2[3] = -1, 4
        want = ok.clone()
        want[[0, 3]] = 0
        assert torch.equal(OP(data, instances, boxes, i2, 7), want)
        for _, r, row in _bad_rows(instances, data.numel()):
            want = ok.clone()
            want[index == row] = 0
            assert torch.equal(OP(data, r, boxes, index, 7), want)
        with pytest.raises(RuntimeError, match="same device"):
            OP(data.cpu(), instances, boxes, index, 7)


# ---- the CUDA kernel against the CPU kernel: emulated (always) and on the GPU (where there is
# one), bitwise as in tests/test_cuda_matches_cpu.py, whose markers these cases carry ----------

BACKENDS = [
    pytest.param("emu", marks=[pytest.mark.emu, pytest.mark.skipif(
        not emulated.available(), reason=f"no emulated CUDA kernels: {emulated.error()}")]),
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not CUDA_AVAILABLE, reason="no GPU, or the CUDA kernels are not built")]),
]


def _run(backend, *args):
    if backend == "emu":
        return torch.ops.maskrcnn_fast_emu.packed_mask_targets(*args)
    return OP(*[a.cuda() if isinstance(a, torch.Tensor) else a for a in args]).cpu()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [pytest.param(DTYPES[0], marks=[pytest.mark.small, pytest.mark.sanitize_ci]),
                                   *DTYPES[1:]])
def test_cuda_kernel_matches_cpu(backend, dtype, seed):
    data, instances, boxes, index = _case("cpu", n=30, k=70)
    boxes = boxes.to(dtype)
    for m in (28, 5):
        assert torch.equal(_run(backend, data, instances, boxes, index, m), OP(data, instances, boxes, index, m))
    assert _run(backend, data, instances, boxes[:0], index[:0], 28).shape == (0, 28, 28)
    # boxes beyond the shared-memory tap table
    data, instances = packed_masks(3, max_side=300, resize="up", empty_every=0)
    big = torch.tensor([[-10.0, -20.0, 410.0, 290.0], [5.0, 3.0, 900.0, 700.0], [0.0, 0.0, 600.0, 30.0]])
    assert torch.equal(_run(backend, data, instances, big.to(dtype), torch.arange(3), 28),
                       OP(data, instances, big.to(dtype), torch.arange(3), 28))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.small
@pytest.mark.sanitize_ci
def test_cuda_kernel_guards(backend, seed):
    """Rows and indices the CPU rejects: zeros for those boxes, no read out of bounds."""
    data, instances = _row2_not_empty(*packed_masks(6))
    index = torch.randint(0, 6, (40,))
    index[:6] = torch.arange(6)
    boxes = packed_boxes(instances, index)
    ok = OP(data, instances, boxes, index, 14)
    bad_index = index.clone()
    bad_index[[3, 17]] = torch.tensor([6, -1])
    want = ok.clone()
    want[[3, 17]] = 0
    assert torch.equal(_run(backend, data, instances, boxes, bad_index, 14), want)
    for _, rows, row in _bad_rows(instances, data.numel()):
        want = ok.clone()
        want[index == row] = 0
        assert torch.equal(_run(backend, data, rows, boxes, index, 14), want)
    # no instances at all, no data
    none = torch.empty(0, 9, dtype=torch.int64)
    assert torch.equal(_run(backend, data[:0], none, boxes, index, 14), torch.zeros_like(ok))
