import math

import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

import maskrcnn_fast  # noqa: F401
from maskrcnn_fast.ops import paste_masks, paste_masks_batched
from maskrcnn_fast.ops import reference as ref
from maskrcnn_fast.ops.reference.paste_masks import _expanded_int_boxes

OP = torch.ops.maskrcnn_fast.paste_masks.default
# Observed max |fused - torchvision| in float32 is ~1e-6 (ATen's CPU resize is compiled with
# FMA contraction, we are not); the brief's bound is 1e-4.
ATOL32 = 2e-5


def _boxes(n, h, w, gen=None):
    """Boxes of every kind: ordinary, tiny (under a pixel), zero-width, huge, partly outside,
    negative coordinates, fractional everywhere."""
    kinds = []
    for i in range(n):
        k = i % 6
        cx, cy = torch.rand(2, generator=gen).tolist()
        cx, cy = cx * w, cy * h
        if k == 0:  # ordinary
            bw, bh = (torch.rand(2, generator=gen) * 0.6 * torch.tensor([w, h]) + 2).tolist()
        elif k == 1:  # tiny
            bw, bh = (torch.rand(2, generator=gen) * 0.9).tolist()
        elif k == 2:  # zero width or height
            bw, bh = (0.0, 7.5) if i % 2 else (5.25, 0.0)
        elif k == 3:  # huge
            bw, bh = (torch.rand(2, generator=gen) * 3 * torch.tensor([w, h]) + w).tolist()
        elif k == 4:  # around the top-left corner: negative coordinates
            cx, cy = cx * 0.1, cy * 0.1
            bw, bh = (torch.rand(2, generator=gen) * 20 + 1).tolist()
        else:  # across the bottom-right border
            cx, cy = w + (cx / w - 0.5) * 10, h + (cy / h - 0.5) * 10
            bw, bh = (torch.rand(2, generator=gen) * 30 + 1).tolist()
        kinds.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
    return torch.tensor(kinds, dtype=torch.float32)


def _tv_can_paste(boxes, m, padding, h, w):
    """torchvision fails (Python's negative slice indices) on boxes that end left of or above
    the image or start right of or below it; those are checked against zeros elsewhere."""
    b, valid = _expanded_int_boxes(boxes, (m + 2 * padding) / m)
    return valid & (b[:, 2] + 1 >= 0) & (b[:, 3] + 1 >= 0) & (b[:, 0] <= w) & (b[:, 1] <= h)


@pytest.mark.parametrize("m", [28, 14])
@pytest.mark.parametrize("padding", [1, 0])
def test_matches_torchvision_and_reference(device, seed, m, padding):
    h, w = 37, 53
    boxes = _boxes(48, h, w)
    masks = torch.rand(48, 1, m, m)
    out = paste_masks(masks.to(device), boxes.to(device), (h, w), padding=padding).cpu()
    assert out.shape == (48, 1, h, w) and out.dtype == torch.float32
    ok = _tv_can_paste(boxes, m, padding, h, w)
    expected = paste_masks_in_image(masks[ok], boxes[ok], (h, w), padding=padding)
    err_tv = (out[ok] - expected).abs().max().item()
    expected64 = ref.paste_masks(masks.double(), boxes, (h, w), padding=padding)
    err_ref = (out.double() - expected64).abs().max().item()
    print(f"max abs error: vs torchvision {err_tv:.3g}, vs float64 reference {err_ref:.3g}")
    assert err_tv <= ATOL32 and err_ref <= ATOL32


def test_float64_and_reference_float32(device, seed):
    h, w = 30, 41
    boxes = _boxes(36, h, w).double()
    masks = torch.rand(36, 28, 28, dtype=torch.float64)
    out = paste_masks(masks.to(device), boxes.to(device), (h, w)).cpu()
    torch.testing.assert_close(out, ref.paste_masks(masks, boxes, (h, w)), atol=1e-12, rtol=0)
    ok = _tv_can_paste(boxes, 28, 1, h, w)
    torch.testing.assert_close(out[ok], paste_masks_in_image(masks[ok, None], boxes[ok], (h, w)),
                               atol=1e-12, rtol=0)
    # The float32 reference (the benchmarks' "torch" path) is close to torchvision too.
    m32, b32 = masks.float(), boxes.float()
    ok = _tv_can_paste(b32, 28, 1, h, w)
    torch.testing.assert_close(ref.paste_masks(m32, b32, (h, w))[ok],
                               paste_masks_in_image(m32[ok, None], b32[ok], (h, w)),
                               atol=ATOL32, rtol=0)


def test_non_square_masks(device, seed):
    # torchvision scales boxes by the width's (M + 2 padding) / M and pads both sides.
    h, w = 37, 53
    boxes = _boxes(24, h, w)
    masks = torch.rand(24, 1, 20, 28)
    out = paste_masks(masks.to(device), boxes.to(device), (h, w), padding=2).cpu()
    ok = _tv_can_paste(boxes, 28, 2, h, w)
    tv = paste_masks_in_image(masks[ok], boxes[ok], (h, w), padding=2)
    assert (out[ok] - tv).abs().max().item() <= ATOL32
    expected = ref.paste_masks(masks.double(), boxes, (h, w), padding=2)
    assert (out.double() - expected).abs().max().item() <= ATOL32


def test_wholly_outside_and_degenerate(device):
    masks = torch.rand(6, 1, 28, 28)
    boxes = torch.tensor([
        [-60.0, 5, -20, 20],    # left of the image (torchvision raises)
        [5, -60, 20, -20],      # above
        [100, 5, 120, 20],      # right
        [5, 100, 20, 120],      # below
        [10, 5, 5, 20],         # inverted
        [10.0, 5, 10, 20],      # zero width: one column
    ])
    out = paste_masks(masks.to(device), boxes.to(device), (30, 40)).cpu()
    assert out[:5].abs().sum() == 0
    tv = paste_masks_in_image(masks[5:], boxes[5:], (30, 40))[0]
    assert (out[5] - tv).abs().max().item() <= ATOL32
    assert (out[5, 0] != 0).any(dim=0).sum() == 1


@pytest.mark.parametrize("threshold", [0.5, 0.0, 0.9])
def test_threshold_uint8(device, seed, threshold):
    h, w = 37, 53
    boxes = _boxes(30, h, w)
    masks = torch.rand(30, 1, 28, 28)
    out = paste_masks(masks.to(device), boxes.to(device), (h, w), threshold=threshold).cpu()
    assert out.dtype == torch.uint8 and out.shape == (30, 1, h, w)
    ok = _tv_can_paste(boxes, 28, 1, h, w)
    probs = paste_masks_in_image(masks[ok], boxes[ok], (h, w))
    expected = (probs > threshold).to(torch.uint8)
    near = (probs - threshold).abs() <= 1e-4
    assert torch.equal(out[ok][~near], expected[~near])
    # Our own probabilities thresholded: exact everywhere.
    mine = paste_masks(masks.to(device), boxes.to(device), (h, w)).cpu()
    assert torch.equal(out, (mine > threshold).to(torch.uint8))


def test_batched_images_of_different_sizes(device, seed):
    sizes = [(30, 41), (45, 20), (12, 60)]
    counts = [7, 0, 9]
    masks, boxes, index = [], [], []
    for i, ((h, w), c) in enumerate(zip(sizes, counts)):
        masks.append(torch.rand(c, 1, 28, 28))
        boxes.append(_boxes(c, h, w) if c else torch.zeros(0, 4))
        index.append(torch.full((c,), i, dtype=torch.int64))
    perm = torch.randperm(16)  # images interleaved
    masks, boxes, index = torch.cat(masks)[perm], torch.cat(boxes)[perm], torch.cat(index)[perm]
    out = paste_masks_batched(masks.to(device), boxes.to(device), index.to(device), sizes).cpu()
    assert out.shape == (16, 1, 45, 60)
    expected = ref.paste_masks_batched(masks.double(), boxes, index, sizes)
    assert (out.double() - expected).abs().max().item() <= ATOL32
    for i, (h, w) in enumerate(sizes):
        sel = index == i
        if not sel.any():
            continue
        assert out[sel, :, h:].abs().sum() == 0 and out[sel, :, :, w:].abs().sum() == 0
        ok = _tv_can_paste(boxes[sel], 28, 1, h, w)
        tv = paste_masks_in_image(masks[sel][ok], boxes[sel][ok], (h, w))
        assert (out[sel][ok][:, :, :h, :w] - tv).abs().max().item() <= ATOL32
    # The same with image_sizes as a tensor, an explicit (cropping) out_size and a threshold.
    sizes_t = torch.tensor(sizes).to(device)
    crop = paste_masks_batched(masks.to(device), boxes.to(device), index.to(device), sizes_t,
                               out_size=(20, 50), threshold=0.5).cpu()
    assert crop.shape == (16, 1, 20, 50) and crop.dtype == torch.uint8
    assert torch.equal(crop, (out[:, :, :20, :50] > 0.5).to(torch.uint8))


def test_empty(device):
    masks = torch.rand(0, 1, 28, 28, device=device)
    boxes = torch.zeros(0, 4, device=device)
    assert paste_masks(masks, boxes, (30, 40)).shape == (0, 1, 30, 40)
    assert paste_masks(masks, boxes, (30, 40), threshold=0.5).dtype == torch.uint8
    index = torch.zeros(0, dtype=torch.int64, device=device)
    assert paste_masks_batched(masks, boxes, index, []).shape == (0, 1, 0, 0)
    masks = torch.rand(2, 28, 28, device=device)
    boxes = torch.tensor([[1.0, 1, 5, 5], [2, 2, 9, 9]], device=device)
    assert paste_masks(masks, boxes, (0, 7)).shape == (2, 1, 0, 7)


def test_non_contiguous(device, seed):
    h, w = 33, 47
    masks = torch.rand(20, 28, 2, 28).transpose(1, 2)[:, :1]  # [20, 1, 28, 28], strided
    boxes = torch.stack([_boxes(20, h, w), torch.zeros(20, 4)], dim=2).reshape(20, 8)[:, ::2]
    assert not masks.is_contiguous() and not boxes.is_contiguous()
    out = paste_masks(masks.to(device), boxes.to(device), (h, w)).cpu()
    expected = paste_masks(masks.contiguous(), boxes.contiguous(), (h, w))
    assert torch.equal(out, expected)
    index = torch.zeros(40, dtype=torch.int64)[::2]
    sizes = torch.tensor([[h, 99, w, 99]])[:, ::2]  # [1, 2], stride 2
    out_b = paste_masks_batched(masks.to(device), boxes.to(device), index.to(device),
                                sizes.to(device), out_size=(h, w)).cpu()
    assert torch.equal(out_b, expected)


@pytest.mark.parametrize("dtype,atol_ref,atol_tv", [(torch.half, 5e-4, 2e-3),
                                                    (torch.bfloat16, 4e-3, 1.6e-2)])
def test_reduced_precision_masks(device, seed, dtype, atol_ref, atol_tv):
    h, w = 37, 53
    boxes = _boxes(30, h, w)
    masks = torch.rand(30, 1, 28, 28).to(dtype)
    out = paste_masks(masks.to(device), boxes.to(device), (h, w)).cpu()
    assert out.dtype == dtype
    expected = ref.paste_masks(masks.double(), boxes, (h, w))
    assert (out.double() - expected).abs().max().item() <= atol_ref
    ok = _tv_can_paste(boxes, 28, 1, h, w)
    tv = paste_masks_in_image(masks[ok], boxes[ok], (h, w))
    assert (out[ok].double() - tv.double()).abs().max().item() <= atol_tv


@pytest.mark.parametrize("box_dtype", [torch.half, torch.bfloat16, torch.float64])
def test_box_dtype_arithmetic(device, seed, box_dtype):
    # The box expansion and truncation happen in the boxes' dtype, as in torchvision.
    h, w = 150, 290  # coordinates up to ~600: half rounds them to 0.5 px
    boxes = (_boxes(24, h, w) * 2.03).to(box_dtype)
    masks = torch.rand(24, 1, 28, 28)
    out = paste_masks(masks.to(device), boxes.to(device), (h, w)).cpu()
    ok = _tv_can_paste(boxes, 28, 1, h, w)
    tv = paste_masks_in_image(masks[ok], boxes[ok], (h, w))
    assert (out[ok] - tv).abs().max().item() <= ATOL32


def test_nan_and_inf_boxes(device):
    masks = torch.rand(5, 1, 28, 28)
    nan, inf = math.nan, math.inf
    boxes = torch.tensor([[nan, 0, 10, 10], [0, 0, inf, 10], [-inf, 0, 5, 5], [0, 0, 1e30, 5],
                          [3.0, 4, 20, 25]])
    for threshold in (None, 0.5):
        out = paste_masks(masks.to(device), boxes.to(device), (30, 40), threshold=threshold).cpu()
        assert out[:4].abs().sum() == 0
        tv = paste_masks_in_image(masks[4:], boxes[4:], (30, 40))
        if threshold is None:
            assert (out[4:] - tv).abs().max().item() <= ATOL32
    assert ref.paste_masks(masks, boxes, (30, 40))[:4].abs().sum() == 0


def _args(n=4, m=28, device="cpu"):
    return (torch.rand(n, m, m, device=device), torch.rand(n, 4, device=device) * 10,
            None, None, 12, 14, 1, None)


def test_bad_inputs(device):
    masks, boxes = torch.rand(4, 1, 28, 28, device=device), torch.rand(4, 4, device=device) * 9
    idx = torch.zeros(4, dtype=torch.int64, device=device)
    sizes = torch.tensor([[10, 12]], device=device)
    cases = [
        ((masks.int(), boxes, None, None, 10, 12, 1, None), "masks"),
        ((masks[:, 0, 0], boxes, None, None, 10, 12, 1, None), "masks"),
        ((masks.expand(4, 2, 28, 28), boxes, None, None, 10, 12, 1, None), "masks"),
        ((masks[:, :, :0], boxes, None, None, 10, 12, 1, None), "masks"),
        ((masks, boxes[:, :3], None, None, 10, 12, 1, None), "boxes"),
        ((masks, boxes[:3], None, None, 10, 12, 1, None), "boxes"),
        ((masks, boxes.long(), None, None, 10, 12, 1, None), "boxes"),
        ((masks, boxes, idx.int(), sizes, 10, 12, 1, None), "image_index"),
        ((masks, boxes, idx[:3], sizes, 10, 12, 1, None), "image_index"),
        ((masks, boxes, idx, sizes[0], 10, 12, 1, None), "image_sizes"),
        ((masks, boxes, idx, sizes.float(), 10, 12, 1, None), "image_sizes"),
        ((masks, boxes, None, None, -1, 12, 1, None), "out_height"),
        ((masks, boxes, None, None, 10, 12, -1, None), "padding"),
        ((masks, boxes, None, None, 10, 12, 1, -0.5), "threshold"),
        ((masks, boxes, None, None, 10, 12, 1, math.nan), "threshold"),
    ]
    if device == "cpu":  # data-dependent: errors on the CPU, zero masks on CUDA
        cases += [
            ((masks, boxes, idx + 1, sizes, 10, 12, 1, None), "image_index"),
            ((masks, boxes, idx - 1, sizes, 10, 12, 1, None), "image_index"),
            ((masks, boxes, idx, -sizes, 10, 12, 1, None), "image_sizes"),
        ]
    for args, name in cases:
        with pytest.raises((RuntimeError, ValueError), match=name):
            OP(*args)
    if torch.cuda.is_available() and device == "cuda":
        with pytest.raises(RuntimeError, match="boxes"):
            OP(masks, boxes.cpu(), None, None, 10, 12, 1, None)
        with pytest.raises(RuntimeError, match="image_index"):
            OP(masks, boxes, idx.cpu(), sizes, 10, 12, 1, None)


def test_opcheck(device):
    masks, boxes = torch.rand(5, 1, 14, 14, device=device), torch.rand(5, 4, device=device) * 9
    boxes[:, 2:] += boxes[:, :2]
    idx = torch.tensor([0, 1, 1, 0, 1], device=device)
    sizes = torch.tensor([[10, 12], [7, 15]], device=device)
    for args in [
        (masks, boxes, None, None, 10, 12, 1, None),
        (masks[:, 0].double(), boxes, None, None, 10, 12, 0, 0.5),
        (masks.half(), boxes, idx, sizes, 10, 15, 1, None),
        (masks, boxes, idx, sizes, 10, 15, 2, 0.25),
    ]:
        torch.library.opcheck(OP, args)


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_large_output_written_only_inside_boxes(device, seed, threshold):
    # >= 16 MB of output: on Linux the CPU kernel takes fresh zero pages and writes only the
    # pixels inside the boxes; the result must not change.
    h, w = 700, 1000
    boxes = _boxes(30, h, w)
    masks = torch.rand(30, 1, 28, 28)
    out = paste_masks(masks.to(device), boxes.to(device), (h, w), threshold=threshold).cpu()
    ok = _tv_can_paste(boxes, 28, 1, h, w)
    expected = paste_masks_in_image(masks[ok], boxes[ok], (h, w))
    if threshold is None:
        assert (out[ok] - expected).abs().max().item() <= ATOL32
    else:
        near = (expected - threshold).abs() <= 1e-4
        assert torch.equal(out[ok].bool() | near, (expected > threshold) | near)
    assert not out[~ok].any()
    out.add_(1)  # the storage is ordinary writable memory
    assert out.min().item() >= 1
