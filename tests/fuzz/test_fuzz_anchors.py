"""Fuzz: grid_anchors / AnchorGenerator against torchvision and the float64 reference
(tolerances of tests/test_anchors.py).
"""
import pytest
import torch
from hypothesis import given, strategies as st
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator

from maskrcnn_fast.ops import AnchorGenerator, grid_anchors
from maskrcnn_fast.ops import reference as ref
from support.fuzz import devices, dtypes, non_contiguous


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_grid_anchors(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    levels = draw(st.integers(1, 5))
    cells, grids, strides = [], [], []
    for _ in range(levels):
        a = draw(st.integers(0, 4))
        cells.append(ref.cell_anchors(
            draw(st.lists(st.sampled_from([1, 2, 16, 32, 128, 512, 4096]), min_size=1, max_size=2)),
            [0.5, 1.0, 2.0, 0.25, 3.0][: max(a, 1)], dtype=dtype, device=device)[:a])
        grids.append((draw(st.integers(0, 6)), draw(st.integers(0, 6))))
        strides.append((draw(st.integers(0, 70)), draw(st.integers(0, 70))))
    cells = [non_contiguous(c, draw) for c in cells]
    got = grid_anchors(cells, grids, strides)
    want = ref.grid_anchors([c.contiguous() for c in cells], grids, strides)
    assert got.dtype == dtype and got.device.type == device
    assert torch.equal(got, want)
    tv = TVAnchorGenerator(((1,),) * levels, ((1.0,),) * levels)
    tv.cell_anchors = [c.cpu() for c in cells]
    tv_out = tv.grid_anchors([list(g) for g in grids],
                             [[torch.tensor(s[0]), torch.tensor(s[1])] for s in strides])
    assert torch.equal(got.cpu(), torch.cat(tv_out))


@pytest.mark.cuda  # draws its device: cuda too where there is one
@given(data=st.data())
def test_fuzz_anchor_generator_module(data):
    draw = data.draw
    device, dtype = draw(devices), draw(dtypes)
    levels = draw(st.integers(1, 3))
    sizes = tuple(tuple(draw(st.lists(st.sampled_from([8, 16, 32, 100]), min_size=1, max_size=2)))
                  for _ in range(levels))
    ratios = tuple(tuple(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, 0.3]), min_size=1, max_size=3)))
                   for _ in range(levels))
    n = draw(st.integers(0, 2))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    feats = [torch.zeros(max(n, 1), 1, draw(st.integers(1, h)), draw(st.integers(1, w)), dtype=dtype,
                         device=device) for _ in range(levels)]

    class Images:
        tensors = torch.zeros(max(n, 1), 3, h, w, dtype=dtype, device=device)
        image_sizes = [(h, w)] * n

    got = AnchorGenerator(sizes, ratios)(Images, feats)
    want = TVAnchorGenerator(sizes, ratios)(Images, feats)
    assert len(got) == len(want) == n
    for g, e in zip(got, want):
        assert g.dtype == e.dtype and torch.equal(g, e)
