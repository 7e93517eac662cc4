"""Fuzz: mask_targets against torchvision and the pure-PyTorch reference (tolerances of
tests/test_mask_targets.py): bitwise our roi_align on the float copy of the masks (every box,
NaN/Inf included: zeros), bitwise torchvision's project_masks_on_boxes semantics (roi_align,
spatial_scale 1, sampling_ratio -1, aligned False) on finite boxes whose sampling grid is small
(torchvision's is unbounded), and the reference: float64 1e-12, the others in float32 1e-5 (the
adaptive grid ceil(size / M) is discontinuous, so each dtype is compared with the reference in its
own compute dtype). Out-of-range indices raise on the CPU naming the argument.
"""
import math

import pytest
import torch
import torchvision
from hypothesis import given, strategies as st

import maskrcnn_fast.ops as ops
from maskrcnn_fast.ops import reference as ref
from support.fuzz import CUDA, boxes, devices, dtypes, non_contiguous


MAX_TV_SAMPLES = 200_000  # per call: torchvision's adaptive grid is unbounded


MAX_OUR_SAMPLES = 2_000_000  # our roi_align on the float copy (the grid capped at 1024)


def _samples(b, m, cap=1024):
    """Float64[K]: bilinear samples roi_align takes for each box (aligned=False, adaptive grid
    capped at ``cap`` per side, as ours is at 1024; inf for non-finite boxes)."""
    w = (b[:, 2] - b[:, 0]).clamp(min=1.0)
    h = (b[:, 3] - b[:, 1]).clamp(min=1.0)
    gh, gw = torch.ceil(h / m), torch.ceil(w / m)
    n = gh.clamp(max=cap) * gw.clamp(max=cap) * m * m
    return torch.where(torch.isfinite(b).all(1) & torch.isfinite(gh * gw), n, torch.full_like(n, math.inf))


@st.composite
def _mask_problem(draw):
    dtype = draw(dtypes)
    images = draw(st.integers(0, 3))
    nonfinite = draw(st.integers(0, 3)) == 0
    extreme = draw(st.booleans())
    masks, bx, idx = [], [], []
    for _ in range(images):
        g, h, w = draw(st.integers(0, 3)), draw(st.integers(0, 12)), draw(st.integers(0, 12))
        if draw(st.integers(0, 5)) == 0:
            h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
        kind = draw(st.sampled_from(["binary", "binary", "bool", "values", "blocks"]))
        if kind == "values":  # uint8 values are numbers, as in the float copy
            m = torch.randint(0, 256, (g, h, w), generator=gen, dtype=torch.uint8)
        elif kind == "blocks":
            m = (torch.rand(g, h // 3 + 1, w // 3 + 1, generator=gen) > 0.5)
            m = m.repeat_interleave(3, 1).repeat_interleave(3, 2)[:, :h, :w].to(torch.uint8)
        else:
            m = (torch.rand(g, h, w, generator=gen) > 0.5).to(torch.uint8)
        if kind == "bool":
            m = m.bool()
        layout = draw(st.sampled_from(["contiguous", "contiguous", "transposed", "strided"]))
        if layout == "transposed":
            m = m.transpose(1, 2).contiguous().transpose(1, 2)
        elif layout == "strided":
            m = torch.stack([m, m], dim=-1)[..., 1]
        k = draw(st.integers(0, 4)) if g else 0
        size = float(max(h, w, 1))
        bx.append(draw(boxes(k, lo=-0.3 * size - 2, hi=1.3 * size + 2, nonfinite=nonfinite,
                             extreme=extreme, size_hi=size + 2)).to(dtype))
        idx.append(torch.tensor(draw(st.lists(st.integers(0, max(g - 1, 0)), min_size=k, max_size=k)),
                                dtype=torch.int64))
        masks.append(m)
    m_out = draw(st.sampled_from([1, 2, 3, 5, 7, 14, 28]))
    return masks, bx, idx, m_out, dtype


def _rois(bx, idx, dtype):
    if not bx:
        return torch.zeros(0, 5, dtype=dtype)
    return torch.cat([torch.cat([i[:, None].to(dtype), b], 1) for i, b in zip(idx, bx)])


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(problem=_mask_problem(), device=devices, data=st.data())
def test_fuzz_mask_targets(problem, device, data):
    masks, bx, idx, m, dtype = problem
    k = sum(b.shape[0] for b in bx)
    if data.draw(st.booleans()) and bx:  # one [K, 4] tensor, rows in any order, with image_index
        flat, flat_idx = torch.cat(bx), torch.cat(idx)
        image = torch.cat([torch.full((b.shape[0],), i, dtype=torch.int64) for i, b in enumerate(bx)])
        perm = torch.randperm(k, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))))
        bx, idx, image = [flat[perm]], [flat_idx[perm]], image[perm]
        got = ops.mask_targets([t.to(device) for t in masks], non_contiguous(bx[0], data.draw).to(device),
                               idx[0].to(device), m, image_index=image.to(device))
        want_ref = ref.mask_targets(masks, bx[0], idx[0], m, image_index=image)
    else:
        image = None
        got = ops.mask_targets([t.to(device) for t in masks], [b.to(device) for b in bx],
                               [i.to(device) for i in idx], m)
        want_ref = ref.mask_targets(masks, bx, idx, m)
    assert got.shape == (k, m, m) and got.dtype == (bx[0].dtype if bx else got.dtype)
    got = got.cpu()
    all_boxes = torch.cat(bx) if bx else torch.zeros(0, 4, dtype=dtype)
    all_idx = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.int64)
    if image is None:
        image = torch.cat([torch.full((b.shape[0],), i, dtype=torch.int64) for i, b in enumerate(bx)]) \
            if bx else torch.zeros(0, dtype=torch.int64)
    finite = torch.isfinite(all_boxes).all(1)
    assert bool((got[~finite] == 0).all()), "non-finite boxes give zeros"
    samples = _samples(all_boxes.double(), m)
    vmax = max([float(t.max()) for t in masks if t.numel()] + [1.0])

    # our roi_align on the float copy in boxes' dtype: bitwise (bounded grids, to stay fast)
    ours_ok = samples.cumsum(0).nan_to_num(math.inf) <= MAX_OUR_SAMPLES
    ours_ok |= ~finite
    # torchvision's semantics (float32/float64, finite boxes, small grids)
    tv_ok = finite & (_samples(all_boxes.double(), m, math.inf).cumsum(0) <= MAX_TV_SAMPLES)
    for i, mk in enumerate(masks):
        rows = (image == i)
        if not bool(rows.any()):
            continue
        sel = rows & ours_ok
        if bool(sel.any()):
            rois = torch.cat([all_idx[sel, None].to(dtype), all_boxes[sel]], 1)
            copy = mk[:, None].to(dtype)
            expect = torch.ops.maskrcnn_fast.roi_align(copy, rois, 1.0, m, m, -1, False)[:, 0]
            assert torch.equal(got[sel], expect)
        sel = rows & tv_ok
        if dtype in (torch.float32, torch.float64) and bool(sel.any()) and mk.shape[1] and mk.shape[2]:
            rois = torch.cat([all_idx[sel, None].to(dtype), all_boxes[sel]], 1)
            tv = torchvision.ops.roi_align(mk[:, None].to(dtype), rois, (m, m), spatial_scale=1.0,
                                           sampling_ratio=-1, aligned=False)[:, 0]
            torch.testing.assert_close(got[sel], tv, rtol=0, atol=0)
    # the reference in the compute dtype (float64: also the float64 oracle)
    assert want_ref.dtype == got.dtype
    if dtype == torch.float64:
        torch.testing.assert_close(got, want_ref, rtol=0, atol=1e-12 * vmax)
    else:
        want32 = ref.mask_targets(masks, all_boxes.float(), all_idx, m, image_index=image)
        torch.testing.assert_close(got.double(), want32.double(), rtol=torch.finfo(dtype).eps,
                                   atol=1e-5 * vmax)


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_mask_targets_errors(data):
    draw = data.draw
    images = draw(st.integers(1, 3))
    masks = [torch.ones(draw(st.integers(1, 3)), 5, 6, dtype=torch.uint8) for _ in range(images)]
    k = draw(st.integers(1, 4))
    bx = torch.tensor([[0.0, 0.0, 4.0, 4.0]]).repeat(k, 1)
    image = torch.tensor(draw(st.lists(st.integers(0, images - 1), min_size=k, max_size=k)))
    gt = torch.tensor([draw(st.integers(0, masks[int(i)].shape[0] - 1)) for i in image])
    j = draw(st.integers(0, k - 1))
    bad = draw(st.sampled_from(["image_index", "matched_index", "boxes", "size", "masks"]))
    size = draw(st.sampled_from([1, 7]))
    if bad == "image_index":
        image[j] = draw(st.sampled_from([-1, images, images + 5, -(2 ** 40)]))
    elif bad == "matched_index":
        gt[j] = draw(st.sampled_from([-1, masks[int(image[j])].shape[0], 2 ** 40]))
    elif bad == "boxes":
        bx = draw(st.sampled_from([bx[:, :3], bx.long(), bx[None], bx.repeat(1, 2)]))
    elif bad == "size":
        size = draw(st.sampled_from([0, -1, 2 ** 31, 2 ** 14]))
    else:
        masks[0] = draw(st.sampled_from([masks[0][0], masks[0].float(), masks[0][None], masks[0].to(torch.int32)]))
    with pytest.raises(RuntimeError, match=bad if bad != "masks" else r"masks\[0\]"):
        torch.ops.maskrcnn_fast.mask_targets(masks, bx, image, gt, size)
    if bad in ("image_index", "matched_index"):
        with pytest.raises(ValueError, match=bad[:7]):
            ref.mask_targets(masks, bx, gt, size, image_index=image)
        if CUDA:  # no sync on CUDA: that box gets zeros, the others their targets
            out = torch.ops.maskrcnn_fast.mask_targets([t.cuda() for t in masks], bx.cuda(), image.cuda(),
                                                        gt.cuda(), size).cpu()
            assert bool((out[j] == 0).all())
