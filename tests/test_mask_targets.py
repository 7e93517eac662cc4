"""mask_targets against torchvision's project_masks_on_boxes, our roi_align on the float copy of
the masks (bitwise) and the float64 reference."""
import pytest
import torch
from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project

import maskrcnn_fast  # noqa: F401
from maskrcnn_fast.ops import mask_targets, project_masks_on_boxes
from maskrcnn_fast.ops import reference as ref
from support.ops import blob_masks, boxes_of_every_kind

OP = torch.ops.maskrcnn_fast.mask_targets.default
SIZES = [(37, 53), (64, 40), (21, 30)]  # images of different sizes


def _case(device, n_per_image=14, sizes=SIZES, mask_dtype=torch.uint8):
    masks = [blob_masks(int(torch.randint(1, 5, ())), h, w, mask_dtype, device) for h, w in sizes]
    boxes = [boxes_of_every_kind(n_per_image, h, w).to(device) for h, w in sizes]
    idx = [torch.randint(0, m.shape[0], (n_per_image,), device=device) for m in masks]
    return masks, boxes, idx


def _via_roi_align(masks, boxes, idx, m, dtype):
    """Our roi_align on the masks' copy in boxes' dtype: what mask_targets must equal bitwise."""
    out = []
    for mk, b, i in zip(masks, boxes, idx):
        rois = torch.cat([i[:, None].to(dtype), b.to(dtype)], 1)
        out.append(torch.ops.maskrcnn_fast.roi_align(mk[:, None].to(dtype), rois, 1.0, m, m, -1, False)[:, 0])
    return torch.cat(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [28, 5])
def test_matches_roi_align_torchvision_and_reference(device, seed, dtype, m):
    masks, boxes, idx = _case(device)
    boxes = [b.to(dtype) for b in boxes]
    out = mask_targets(masks, boxes, idx, m)
    assert out.shape == (sum(b.shape[0] for b in boxes), m, m) and out.dtype == dtype
    assert torch.equal(out, _via_roi_align(masks, boxes, idx, m, dtype))
    cpu = [t.cpu() for t in masks], [b.cpu() for b in boxes], [i.cpu() for i in idx]
    tv = torch.cat([tv_project(mk, b, i, m) for mk, b, i in zip(*cpu)])
    torch.testing.assert_close(out.cpu(), tv, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)
    expected = ref.mask_targets(cpu[0], [b.double() for b in cpu[1]], cpu[2], m)
    torch.testing.assert_close(out.cpu().double(), expected, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_concatenated_form_any_order(device, seed):
    """Boxes of all images in one tensor, images interleaved: row k is its own image's target."""
    masks, boxes, idx = _case(device)
    flat, flat_idx = torch.cat(boxes), torch.cat(idx)
    image = torch.cat([torch.full((b.shape[0],), i, device=device) for i, b in enumerate(boxes)])
    perm = torch.randperm(flat.shape[0], device=device)
    out = mask_targets(masks, flat[perm], flat_idx[perm], 28, image_index=image[perm])
    assert torch.equal(out, mask_targets(masks, boxes, idx, 28)[perm])
    assert torch.equal(OP(masks, flat[perm], image[perm], flat_idx[perm], 28), out)
    expected = ref.mask_targets(masks, flat[perm].double(), flat_idx[perm], 28, image_index=image[perm])
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


def test_one_image_matches_torchvision_signature(device, seed):
    masks, boxes, idx = _case(device, sizes=[(30, 41)])
    out = project_masks_on_boxes(masks[0], boxes[0], idx[0], 14)
    tv = tv_project(masks[0].cpu(), boxes[0].cpu(), idx[0].cpu(), 14)
    torch.testing.assert_close(out.cpu(), tv, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype,atol", [(torch.half, 1e-3), (torch.bfloat16, 8e-3)])
def test_half_and_bfloat16(device, seed, dtype, atol):
    masks, boxes, idx = _case(device)
    boxes = [b.to(dtype) for b in boxes]
    out = mask_targets(masks, boxes, idx, 14)
    assert out.dtype == dtype
    assert torch.equal(out, _via_roi_align(masks, boxes, idx, 14, dtype))
    # the same coordinates in float64: only the output rounding differs
    expected = ref.mask_targets([t.cpu() for t in masks], [b.cpu().double() for b in boxes], [i.cpu() for i in idx], 14)
    torch.testing.assert_close(out.cpu().double(), expected, rtol=0, atol=atol)
    assert ref.mask_targets(masks, boxes, idx, 14).dtype == dtype


def test_bool_and_non_binary_masks(device, seed):
    masks, boxes, idx = _case(device)
    out = mask_targets(masks, boxes, idx, 14)
    assert torch.equal(mask_targets([t.bool() for t in masks], boxes, idx, 14), out)
    # uint8 values are numbers, as in the float copy torchvision makes
    values = [t * torch.randint(0, 256, t.shape, dtype=torch.uint8, device=device) for t in masks]
    assert torch.equal(mask_targets(values, boxes, idx, 14), _via_roi_align(values, boxes, idx, 14, torch.float32))
    # other dtypes (soft float masks) go through roi_align on their copy, as in torchvision
    soft = [torch.rand(t.shape, device=device) for t in masks]
    cpu = [t.cpu() for t in soft], [b.cpu() for b in boxes], [i.cpu() for i in idx]
    tv = torch.cat([tv_project(mk, b, i, 14) for mk, b, i in zip(*cpu)])
    torch.testing.assert_close(mask_targets(soft, boxes, idx, 14).cpu(), tv, rtol=0, atol=1e-6)
    assert torch.equal(mask_targets([t.float() for t in masks], boxes, idx, 14), out)


def test_non_contiguous_masks(device, seed):
    masks, boxes, idx = _case(device)
    transposed = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in masks]
    assert not transposed[0].is_contiguous()
    assert torch.equal(mask_targets(transposed, boxes, idx, 14), mask_targets(masks, boxes, idx, 14))
    big = [blob_masks(3, 2 * h, 3 * w, device=device) for h, w in SIZES]
    strided = [t[:, ::2, 1::3] for t in big]
    idx = [i.clamp(max=2) for i in idx]
    out = mask_targets(strided, boxes, idx, 14)
    assert torch.equal(out, mask_targets([t.contiguous() for t in strided], boxes, idx, 14))
    expected = ref.mask_targets(strided, [b.double() for b in boxes], idx, 14)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


def test_no_boxes_and_no_images(device):
    masks, boxes, idx = _case(device)
    empty = torch.empty(0, 4, device=device)
    none = torch.empty(0, dtype=torch.int64, device=device)
    assert mask_targets(masks, [empty] * 3, [none] * 3, 28).shape == (0, 28, 28)
    assert OP([], empty, none, none, 28).shape == (0, 28, 28)
    assert ref.mask_targets(masks, [empty] * 3, [none] * 3, 28).shape == (0, 28, 28)
    # one image without boxes among others
    out = mask_targets(masks, [boxes[0], empty, boxes[2]], [idx[0], none, idx[2]], 7)
    assert torch.equal(out, torch.cat([mask_targets(masks[:1], boxes[:1], idx[:1], 7),
                                       mask_targets(masks[2:], boxes[2:], idx[2:], 7)]))


def test_degenerate_and_outside_boxes(device):
    masks = [torch.ones(2, 10, 12, dtype=torch.uint8, device=device)]
    boxes = torch.tensor(
        [
            [3.0, 3.0, 3.0, 3.0],  # a point: counted as a 1x1 pixel box
            [4.0, 2.0, 4.0, 9.0],  # zero width
            [-30.0, -30.0, -20.0, -20.0],  # wholly above-left
            [13.5, 11.0, 40.0, 30.0],  # wholly below-right (beyond the -1..size sample margin)
            [-5.0, -5.0, 20.0, 20.0],  # covers the image and more
            [float("nan"), 0.0, 5.0, 5.0],
            [0.0, 0.0, float("inf"), 5.0],
        ],
        device=device,
    )
    idx = torch.tensor([0, 1, 0, 1, 0, 0, 1], device=device)
    out = mask_targets(masks, [boxes], [idx], 7)
    assert torch.equal(out, _via_roi_align(masks, [boxes], [idx], 7, torch.float32))
    assert torch.all(out[0] == 1) and torch.all(out[1] == 1)
    assert torch.all(out[2] == 0) and torch.all(out[3] == 0)
    assert torch.all(out[5:] == 0)  # non-finite boxes give zeros
    finite = boxes[:5]
    tv = tv_project(masks[0].cpu(), finite.cpu(), idx[:5].cpu(), 7)
    torch.testing.assert_close(out[:5].cpu(), tv, rtol=0, atol=1e-6)
    torch.testing.assert_close(ref.mask_targets(masks, [boxes.double()], [idx], 7), out.double(), rtol=0, atol=1e-6)


def test_empty_planes(device):
    """Masks with no pixels (H or W = 0): zeros, as roi_align gives."""
    masks = [torch.zeros(2, 0, 5, dtype=torch.uint8, device=device), torch.ones(1, 4, 0, dtype=torch.bool, device=device)]
    boxes = [torch.tensor([[0.0, 0.0, 3.0, 3.0]], device=device)] * 2
    idx = [torch.tensor([1], device=device), torch.tensor([0], device=device)]
    assert torch.equal(mask_targets(masks, boxes, idx, 7), torch.zeros(2, 7, 7, device=device))
    assert torch.equal(ref.mask_targets(masks, boxes, idx, 7), torch.zeros(2, 7, 7, device=device))


def test_big_boxes_exceed_the_tap_table(device, seed):
    """Boxes whose sampling grid is large (over 1024 row + column taps at M = 28)."""
    masks = [blob_masks(2, 300, 420, device=device)]
    boxes = torch.tensor([[-10.0, -20.0, 410.0, 290.0], [5.0, 3.0, 900.0, 700.0]], device=device)
    idx = torch.tensor([0, 1], device=device)
    out = mask_targets(masks, [boxes], [idx], 28)
    assert torch.equal(out, _via_roi_align(masks, [boxes], [idx], 28, torch.float32))
    torch.testing.assert_close(out.double(), ref.mask_targets(masks, [boxes.double()], [idx], 28), rtol=0, atol=1e-5)


def test_opcheck(device):
    masks, boxes, idx = _case(device, n_per_image=4)
    flat, flat_idx = torch.cat(boxes), torch.cat(idx)
    image = torch.cat([torch.full((b.shape[0],), i, device=device) for i, b in enumerate(boxes)])
    torch.library.opcheck(OP, (masks, flat, image, flat_idx, 7))
    torch.library.opcheck(OP, ([masks[0].bool(), masks[1]], flat[:8].double(), image[:8], flat_idx[:8], 5))
    none = torch.empty(0, dtype=torch.int64, device=device)
    torch.library.opcheck(OP, (masks, flat[:0], none, none, 3))


def test_compile_has_no_graph_break(device):
    # backend="eager": graph breaks do not depend on the backend (dynamo still runs the fake kernel)
    masks, boxes, idx = _case(device, n_per_image=4)
    fn = torch.compile(lambda m, b, i: mask_targets(m, b, i, 7), backend="eager", fullgraph=True, dynamic=False)
    assert torch.equal(fn(masks, boxes, idx), mask_targets(masks, boxes, idx, 7))


def test_bad_input_names_the_argument(device):
    masks, boxes, idx = _case(device, n_per_image=3)
    flat, flat_idx = torch.cat(boxes), torch.cat(idx)
    image = torch.cat([torch.full((3,), i, device=device) for i in range(3)])
    bad = [
        ("masks", ([masks[0][0]] + masks[1:], flat, image, flat_idx, 7)),
        ("masks", ([masks[0].float()] + masks[1:], flat, image, flat_idx, 7)),
        ("boxes", (masks, flat[:, :3], image, flat_idx, 7)),
        ("boxes", (masks, flat.long(), image, flat_idx, 7)),
        ("image_index", (masks, flat, image.int(), flat_idx, 7)),
        ("image_index", (masks, flat, image[:-1], flat_idx, 7)),
        ("matched_index", (masks, flat, image, flat_idx[:, None], 7)),
        ("size", (masks, flat, image, flat_idx, 0)),
        ("size", (masks, flat, image, flat_idx, -3)),
    ]
    if device == "cpu":  # data-dependent: CUDA writes zeros instead (below)
        bad += [
            ("image_index", (masks, flat, image + 3, flat_idx, 7)),
            ("image_index", (masks, flat, image - 1, flat_idx, 7)),
            ("matched_index", (masks, flat, image, flat_idx + 5, 7)),
            ("matched_index", (masks, flat, image, flat_idx - 1, 7)),
        ]
    for name, args in bad:
        with pytest.raises((RuntimeError, ValueError), match=name):
            OP(*args)
    with pytest.raises(ValueError, match="image_index"):
        ref.mask_targets(masks, flat, flat_idx, 7, image_index=image + 1)
    with pytest.raises(ValueError, match="matched"):
        ref.mask_targets(masks, boxes, [i + 5 for i in idx], 7)
    if device == "cuda":
        image2 = image.clone()
        image2[0], image2[4] = -1, 3
        gt = flat_idx.clone()
        gt[6] = 9
        out = OP(masks, flat, image2, gt, 7)
        good = torch.ones(9, dtype=torch.bool)
        good[[0, 4, 6]] = False
        assert torch.all(out[~good.to(device)] == 0)
        assert torch.equal(out[good.to(device)], OP(masks, flat, image, flat_idx, 7)[good.to(device)])
        with pytest.raises(RuntimeError, match="same device"):
            OP([masks[0].cpu()] + masks[1:], flat, image, flat_idx, 7)


# ---- found by the differential fuzz tests (tests/fuzz), each as a minimal example: the comment
# says what failed and which side was wrong (reference, oracle or neither) ------------------

def test_mask_targets_huge_box_grid_is_capped(device):
    # Found (oracle side): a finite box 1e6 pixels tall at M = 1 made the fuzz oracle run
    # torchvision's roi_align with 1e6 samples per bin (torchvision's adaptive grid is
    # unbounded; 1e30 tall raised "cannot create std::vector larger than max_size()"). Not a
    # kernel bug: mask_targets is documented bitwise our roi_align on the float copy, whose grid
    # is capped at 1024 per side, so such boxes sample differently from torchvision (here the
    # one sample inside the 1 x 1 mask: torchvision 1 / 1e6, ours none of its 1024). The fuzz
    # oracle compares with torchvision only where its uncapped grid is small.
    from torchvision.ops import roi_align as tv_roi_align

    masks = [torch.ones(1, 1, 1, dtype=torch.uint8, device=device)]
    box = torch.tensor([[0.0, 0.0, 0.0, 1e6]], device=device)
    idx = torch.zeros(1, dtype=torch.int64, device=device)
    out = mask_targets(masks, [box], [idx], 1)
    rois = torch.cat([idx[:, None].float(), box], 1)
    ours = torch.ops.maskrcnn_fast.roi_align(masks[0][:, None].float(), rois, 1.0, 1, 1, -1, False)[:, 0]
    assert torch.equal(out, ours) and out.item() == 0
    assert torch.equal(ref.mask_targets(masks, [box], [idx], 1), out)
    tv = tv_roi_align(masks[0][:, None].float().cpu(), rois.cpu(), (1, 1), 1.0, -1, False)
    assert tv.item() == torch.tensor(1e-6).item()
