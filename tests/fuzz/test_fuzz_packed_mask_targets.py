"""Fuzz: packed_mask_targets against mask_targets on the dense, nearest-resized masks (bitwise:
every box, NaN/Inf included, every dtype), torchvision's nearest resize + roi_align (bitwise, in
float32/float64 on finite boxes whose sampling grid is small: torchvision's is unbounded) and the
pure-PyTorch reference (float64 1e-12, the others in float32 1e-5, as for mask_targets). Bad rows
and out-of-range indices raise on the CPU naming the argument; on CUDA those boxes get zeros.
"""
import math

import pytest
import torch
import torchvision
from hypothesis import given, strategies as st

import maskrcnn_fast.ops as ops
from maskrcnn_fast.ops import reference as ref
from support.fuzz import CUDA, boxes, devices, dtypes, non_contiguous
from support.ops import RESIZES, resized_size

MAX_TV_SAMPLES = 200_000  # per call: torchvision's adaptive grid is unbounded


def _samples(b, m, cap):
    w = (b[:, 2] - b[:, 0]).clamp(min=1.0)
    h = (b[:, 3] - b[:, 1]).clamp(min=1.0)
    gh, gw = torch.ceil(h / m), torch.ceil(w / m)
    n = gh.clamp(max=cap) * gw.clamp(max=cap) * m * m
    return torch.where(torch.isfinite(b).all(1) & torch.isfinite(gh * gw), n, torch.full_like(n, math.inf))


def _dense(data, rows):
    """The full-size masks (source frame) of the instances rows."""
    out = []
    for off, x0, y0, cw, ch, h, w, _, _ in rows.tolist():
        m = torch.zeros(h, w, dtype=torch.uint8)
        m[y0:y0 + ch, x0:x0 + cw] = data[off:off + cw * ch].to(torch.uint8).reshape(ch, cw)
        out.append(m)
    return out


def _resize(m, size, dtype):
    """torch's nearest resize of one full-size mask, in dtype (exact: 0..255)."""
    if min(*m.shape, *size) == 0:
        return torch.zeros(size, dtype=dtype)
    return torch.nn.functional.interpolate(m[None, None].to(dtype), size=size, mode="nearest")[0, 0]


@st.composite
def _packed_problem(draw):
    dtype = draw(dtypes)
    n = draw(st.integers(0, 5))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    kind = draw(st.sampled_from(["binary", "binary", "bool", "values"]))
    crops, rows = [], []
    for _ in range(n):
        h, w = draw(st.integers(0, 14)), draw(st.integers(0, 14))
        if draw(st.integers(0, 5)) == 0:
            h, w = draw(st.integers(0, 45)), draw(st.integers(0, 45))
        resize = draw(st.sampled_from(RESIZES + ["any"]))
        if resize == "any":
            oh, ow = draw(st.integers(0, 50)), draw(st.integers(0, 50))
        else:
            oh, ow = resized_size(h, w, resize, gen)
        x0, y0 = draw(st.integers(0, w)), draw(st.integers(0, h))
        cw, ch = draw(st.integers(0, w - x0)), draw(st.integers(0, h - y0))
        if draw(st.integers(0, 4)) == 0:
            cw = ch = 0
        if kind == "values":
            c = torch.randint(0, 256, (ch * cw,), generator=gen, dtype=torch.uint8)
        else:
            c = (torch.rand(ch * cw, generator=gen) > 0.4).to(torch.uint8)
        crops.append(c)
        rows.append([0, x0, y0, cw, ch, h, w, oh, ow])
    data, end = [], 0
    for i in torch.randperm(n, generator=gen).tolist():
        gap = draw(st.integers(0, 2))
        data += [torch.zeros(gap, dtype=torch.uint8), crops[i]]
        rows[i][0] = end + gap
        end += gap + crops[i].numel()
    data = torch.cat(data) if data else torch.zeros(0, dtype=torch.uint8)
    if kind == "bool":
        data = data.bool()
    rows = torch.tensor(rows, dtype=torch.int64).reshape(n, 9)
    k = draw(st.integers(0, 8)) if n else 0
    index = torch.tensor(draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=k, max_size=k)), dtype=torch.int64)
    size = float(max([max(r[7], r[8]) for r in rows.tolist()] + [1]))
    nonfinite = draw(st.integers(0, 3)) == 0
    bx = draw(boxes(k, lo=-0.3 * size - 2, hi=1.3 * size + 2, nonfinite=nonfinite,
                    extreme=draw(st.booleans()), size_hi=size + 2)).to(dtype)
    m = draw(st.sampled_from([1, 2, 3, 5, 7, 14, 28]))
    return data, rows, bx, index, m, dtype


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(problem=_packed_problem(), device=devices, data=st.data())
def test_fuzz_packed_mask_targets(problem, device, data):
    buf, rows, bx, index, m, dtype = problem
    k = bx.shape[0]
    got = ops.packed_mask_targets(non_contiguous(buf, data.draw).to(device), rows.to(device),
                                  non_contiguous(bx, data.draw).to(device), index.to(device), m)
    assert got.shape == (k, m, m) and got.dtype == dtype
    got = got.cpu()
    finite = torch.isfinite(bx).all(1)
    assert bool((got[~finite] == 0).all()), "non-finite boxes give zeros"
    dense = _dense(buf, rows)
    vmax = max([float(buf.max()) if buf.numel() else 0.0] + [1.0])

    # mask_targets on the dense resized masks (each instance its own image): bitwise
    resized = [_resize(d, (r[7], r[8]), torch.float32).to(torch.uint8)[None] for d, r in zip(dense, rows.tolist())]
    if k:
        want = ops.mask_targets(resized, bx, torch.zeros_like(index), m, image_index=index)
        assert torch.equal(got, want)
    # torchvision's nearest resize + roi_align (float32/float64, finite boxes, small grids)
    tv_ok = finite & (_samples(bx.double(), m, math.inf).cumsum(0) <= MAX_TV_SAMPLES)
    if dtype in (torch.float32, torch.float64):
        for j in torch.nonzero(tv_ok).flatten().tolist():
            r = rows[index[j]].tolist()
            plane = _resize(dense[index[j]], (r[7], r[8]), dtype)
            if plane.numel() == 0:
                assert bool((got[j] == 0).all())
                continue
            roi = torch.cat([torch.zeros(1, 1, dtype=dtype), bx[j:j + 1]], 1)
            tv = torchvision.ops.roi_align(plane[None, None], roi, (m, m), spatial_scale=1.0,
                                           sampling_ratio=-1, aligned=False)[0, 0]
            torch.testing.assert_close(got[j], tv, rtol=0, atol=0)
    # the reference in the compute dtype (float64: also the float64 oracle)
    if dtype == torch.float64:
        want_ref = ref.packed_mask_targets(buf, rows, bx, index, m)
        torch.testing.assert_close(got, want_ref, rtol=0, atol=1e-12 * vmax)
    else:
        want32 = ref.packed_mask_targets(buf, rows, bx.float(), index, m)
        torch.testing.assert_close(got.double(), want32.double(), rtol=torch.finfo(dtype).eps, atol=1e-5 * vmax)


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_packed_mask_targets_errors(data):
    draw = data.draw
    n = draw(st.integers(1, 4))
    rows = torch.tensor([[6 * i, 1, 2, 3, 2, 5, 6, 10, 9] for i in range(n)], dtype=torch.int64)
    buf = torch.ones(6 * n, dtype=torch.uint8)
    k = draw(st.integers(1, 4))
    bx = torch.tensor([[0.0, 0.0, 4.0, 4.0]]).repeat(k, 1)
    index = torch.tensor(draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k)))
    j = draw(st.integers(0, k - 1))
    bad = draw(st.sampled_from(["instance_index", "instances row", "boxes", "size", "data", "instances"]))
    size = draw(st.sampled_from([1, 7]))
    row = int(index[j])
    if bad == "instance_index":
        index[j] = draw(st.sampled_from([-1, n, n + 5, -(2 ** 40)]))
    elif bad == "instances row":
        col, value = draw(st.sampled_from([(0, -1), (0, 6 * n - 5), (0, 2 ** 62), (1, 4), (1, -1), (2, 4),
                                           (3, -1), (4, 2 ** 40), (5, 3), (6, 0), (7, -1), (8, 2 ** 31),
                                           (5, -4)]))
        rows[row, col] = value
    elif bad == "boxes":
        bx = draw(st.sampled_from([bx[:, :3], bx.long(), bx[None], bx.repeat(1, 2)]))
    elif bad == "size":
        size = draw(st.sampled_from([0, -1, 2 ** 31, 2 ** 14]))
    elif bad == "data":
        buf = draw(st.sampled_from([buf.float(), buf[None], buf.to(torch.int32)]))
    else:
        rows = draw(st.sampled_from([rows[:, :8], rows.int(), rows[0], rows.double()]))
    pattern = f"instances row {row}" if bad == "instances row" else bad
    with pytest.raises(RuntimeError, match=pattern):
        torch.ops.maskrcnn_fast.packed_mask_targets(buf, rows, bx, index, size)
    if bad in ("instance_index", "instances row"):
        with pytest.raises(ValueError, match=pattern):
            ref.packed_mask_targets(buf, rows, bx, index, size)
        if CUDA:  # no sync on CUDA: that box gets zeros
            out = torch.ops.maskrcnn_fast.packed_mask_targets(buf.cuda(), rows.cuda(), bx.cuda(), index.cuda(),
                                                               size).cpu()
            assert bool((out[j] == 0).all())
