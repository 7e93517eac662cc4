"""AnchorGenerator / grid_anchors against torchvision's AnchorGenerator and the reference."""
import random

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from maskrcnn_fast.ops import AnchorGenerator, grid_anchors
from maskrcnn_fast.ops import reference as ref

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
R50_GRIDS = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
R50_SIZES = ((32,), (64,), (128,), (256,), (512,))


def _random_config(rng, levels):
    sizes = tuple(tuple(rng.choice([8, 16, 24, 32, 45, 64, 100, 128, 181, 256, 512])
                        for _ in range(rng.randint(1, 3))) for _ in range(levels))
    ratios = tuple(tuple(rng.choice([0.25, 0.5, 0.7, 1.0, 1.3, 2.0, 3.0])
                         for _ in range(rng.randint(1, 3))) for _ in range(levels))
    return sizes, ratios


def _inputs(rng, levels, n_images, dtype, device):
    h, w = rng.randint(33, 160), rng.randint(33, 160)  # odd and non-square sizes included
    img = ImageList(torch.zeros(n_images, 1, h, w, dtype=dtype, device=device),
                    [(h - rng.randint(0, 5), w - rng.randint(0, 5)) for _ in range(n_images)])
    fms = []
    for level in range(levels):
        div = 2 ** (level + 2)
        gh, gw = max(1, -(-h // div) + rng.randint(-1, 1)), max(1, -(-w // div) + rng.randint(-1, 1))
        fms.append(torch.zeros(n_images, 2, gh, gw, dtype=dtype, device=device))
    return img, fms


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("levels", [1, 2, 3, 5])
def test_forward_matches_torchvision(device, seed, dtype, levels):
    rng = random.Random(seed)
    sizes, ratios = _random_config(rng, levels)
    img, fms = _inputs(rng, levels, rng.randint(1, 3), dtype, device)
    expected = TVAnchorGenerator(sizes, ratios)(img, fms)
    gen = AnchorGenerator(sizes, ratios)
    got = gen(img, fms)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.device == e.device
        assert torch.equal(g, e)
    assert len({g.data_ptr() for g in got}) == len(got), "each image owns its tensor"
    assert gen.num_anchors_per_location() == TVAnchorGenerator(sizes, ratios).num_anchors_per_location()


def test_r50_fpn_sizes(device):
    ratios = ((0.5, 1.0, 2.0),) * 5
    img = ImageList(torch.zeros(2, 3, 800, 1088, device=device), [(800, 1066), (750, 1088)])
    fms = [torch.zeros(2, 4, h, w, device=device) for h, w in R50_GRIDS]
    expected = TVAnchorGenerator(R50_SIZES, ratios)(img, fms)
    got = AnchorGenerator(R50_SIZES, ratios)(img, fms)
    assert got[0].shape == (3 * sum(h * w for h, w in R50_GRIDS), 4)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


@pytest.mark.parametrize("sizes,ratios", [
    ((128, 256, 512), (0.5, 1.0, 2.0)),  # flat tuples: one size per level, shared ratios
    (((128, 256, 512),), ((0.5, 1.0, 2.0),)),  # torchvision's defaults
    (((10, 37), (3,)), ((0.33, 1.7), (1.0, 4.0, 0.1))),
])
def test_cell_anchors_match_torchvision(sizes, ratios):
    tv, ours = TVAnchorGenerator(sizes, ratios), AnchorGenerator(sizes, ratios)
    assert len(tv.cell_anchors) == len(ours.cell_anchors)
    for a, b in zip(tv.cell_anchors, ours.cell_anchors):
        assert torch.equal(a, b) and a.dtype == b.dtype
    assert tv.num_anchors_per_location() == ours.num_anchors_per_location()
    s, r = ours.sizes[0], ours.aspect_ratios[0]
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(ours.generate_anchors(s, r, dtype), tv.generate_anchors(s, r, dtype))
        assert torch.equal(ref.cell_anchors(s, r, dtype), tv.generate_anchors(s, r, dtype))


def test_grid_anchors_method_matches_torchvision(device):
    sizes, ratios = ((16, 32), (64,)), ((0.5, 1.0), (1.0, 2.0, 3.0))
    tv, ours = TVAnchorGenerator(sizes, ratios), AnchorGenerator(sizes, ratios)
    grid_sizes = [[7, 9], [4, 5]]
    strides = [[torch.tensor(8), torch.tensor(6)], [torch.tensor(16), torch.tensor(13)]]
    for a, b in zip(tv.grid_anchors(grid_sizes, strides), ours.grid_anchors(grid_sizes, strides)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_op_matches_reference(device, seed, dtype):
    # Non-integer cell anchors and large strides: the sum is rounded once in every dtype.
    levels = 4
    cells = [torch.randn(a, 4, dtype=dtype, device=device) * 50 for a in (3, 1, 5, 2)]
    grids = [(int(torch.randint(0, 20, ())), int(torch.randint(0, 20, ()))) for _ in range(levels)]
    strides = [(int(torch.randint(0, 1000, ())), int(torch.randint(0, 1000, ()))) for _ in range(levels)]
    got = grid_anchors(cells, grids, strides)
    assert torch.equal(got, ref.grid_anchors(cells, grids, strides))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_op_reduced_precision_matches_reference(device, dtype):
    # Shifts beyond the exactly representable integers of half / bfloat16 round first.
    cells = [torch.tensor([[-3.5, -2.25, 3.5, 2.25], [-300.0, -10.0, 300.0, 10.0]],
                          dtype=dtype, device=device)]
    grids, strides = [(9, 11)], [(257, 313)]
    assert torch.equal(grid_anchors(cells, grids, strides), ref.grid_anchors(cells, grids, strides))


def test_empty_levels_and_images(device):
    cells = [torch.ones(3, 4, device=device), torch.ones(2, 4, device=device)]
    out = grid_anchors(cells, [(0, 5), (2, 3)], [(4, 4), (8, 8)])
    assert out.shape == (12, 4)
    assert torch.equal(out, ref.grid_anchors(cells, [(0, 5), (2, 3)], [(4, 4), (8, 8)]))
    assert grid_anchors(cells, [(0, 5), (3, 0)], [(4, 4), (8, 8)]).shape == (0, 4)
    gen = AnchorGenerator(((32,),), ((1.0,),))
    img = ImageList(torch.zeros(0, 3, 64, 64, device=device), [])
    assert gen(img, [torch.zeros(0, 1, 8, 8, device=device)]) == []


def test_non_contiguous_cell_anchors(device):
    cells = torch.randn(5, 6, dtype=torch.float64, device=device).t()[:, 1:5]  # [6, 4] view
    assert not cells.is_contiguous()
    out = grid_anchors(cells, [(3, 4)], [(5, 7)], num_cell_anchors=[6])
    assert torch.equal(out, ref.grid_anchors([cells.contiguous()], [(3, 4)], [(5, 7)]))


def test_opcheck(device):
    cells = torch.randn(5, 4, device=device)
    torch.library.opcheck(torch.ops.maskrcnn_fast.grid_anchors.default,
                          (cells, [3, 2], [4, 5, 2, 3], [8, 8, 16, 16]))
    torch.library.opcheck(torch.ops.maskrcnn_fast.grid_anchors.default,
                          (cells.double(), [5], [0, 5], [1, 1]))


def test_meta_shape():
    out = torch.ops.maskrcnn_fast.grid_anchors(torch.empty(5, 4, device="meta"), [3, 2],
                                               [4, 5, 2, 3], [8, 8, 16, 16])
    assert out.shape == (4 * 5 * 3 + 2 * 3 * 2, 4) and out.device.type == "meta"


def test_bad_inputs(device):
    op = torch.ops.maskrcnn_fast.grid_anchors
    cells = torch.zeros(3, 4, device=device)
    with pytest.raises(RuntimeError, match="cell_anchors"):
        op(cells.int(), [3], [2, 2], [4, 4])
    with pytest.raises(RuntimeError, match="cell_anchors"):
        op(torch.zeros(3, 5, device=device), [3], [2, 2], [4, 4])
    with pytest.raises(RuntimeError, match="cell_anchors"):
        op(torch.zeros(12, device=device), [3], [2, 2], [4, 4])
    with pytest.raises(RuntimeError, match="cell_anchors"):
        op(cells, [2], [2, 2], [4, 4])  # sum(num_cell_anchors) != rows
    with pytest.raises(RuntimeError, match="strides"):
        op(cells, [3], [2, 2], [4, -4])
    with pytest.raises(RuntimeError, match="grid_sizes"):
        op(cells, [3], [-2, 2], [4, 4])
    with pytest.raises(RuntimeError, match="grid_sizes"):
        op(cells, [3], [2, 2, 2], [4, 4])
    with pytest.raises(RuntimeError, match="strides"):
        op(cells, [3], [2, 2], [4])
    with pytest.raises(RuntimeError, match="num_cell_anchors"):
        op(cells, [4, -1], [2, 2, 2, 2], [4, 4, 4, 4])
    with pytest.raises(RuntimeError, match="num_cell_anchors"):
        op(torch.zeros(17, 4, device=device), [1] * 17, [1] * 34, [1] * 34)
    gen = AnchorGenerator(((32,), (64,)), ((1.0,),) * 2)
    img = ImageList(torch.zeros(1, 3, 64, 64, device=device), [(64, 64)])
    with pytest.raises(ValueError, match="feature_maps"):
        gen(img, [torch.zeros(1, 1, 8, 8, device=device)])
