import pytest
import torch

from maskrcnn_fast.data import SyntheticShapes


def _boxes_from_masks(masks):
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def test_format():
    ds = SyntheticShapes(6, 64, seed=3)
    assert len(ds) == 6 and ds.num_classes == 4 and ds.classes[0] == "__background__"
    assert ds.classes == ["__background__", "circle", "square", "triangle"]
    for i in range(len(ds)):
        img, t = ds[i]
        k = t["labels"].shape[0]
        assert img.dtype == torch.float32 and img.shape == (3, 64, 64)
        assert 0 <= img.min() and img.max() <= 1
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (k, 4)
        assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= 3)).all()
        assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (k, 64, 64)
        assert set(t["masks"].unique().tolist()) <= {0, 1}
        assert t["image_id"] == i
        assert t["area"].dtype == torch.float32 and t["iscrowd"].dtype == torch.int64
        assert (t["iscrowd"] == 0).all() and t["iscrowd"].shape == (k,)
        assert ds.get_height_and_width(i) == (64, 64)


def test_masks_exact_vs_boxes_and_areas():
    ds = SyntheticShapes(20, 80, seed=0)
    for i in range(len(ds)):
        img, t = ds[i]
        m = t["masks"]
        assert len(m) >= 1
        torch.testing.assert_close(t["boxes"], _boxes_from_masks(m), rtol=0, atol=0)
        torch.testing.assert_close(t["area"], m.flatten(1).sum(1).float(), rtol=0, atol=0)
        assert (m.sum(0) <= 1).all(), "visible masks are disjoint"
        assert (t["area"] >= ds.min_area).all()
        b = t["boxes"]
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()


def test_mask_pixels_have_the_shape_colour():
    # inside one visible mask the image is one colour plus mild noise
    img, t = SyntheticShapes(1, 96, seed=5)[0]
    for m in t["masks"].bool():
        px = img[:, m]
        assert (px.std(dim=1) < 0.06).all()


def test_deterministic_regardless_of_order():
    a = SyntheticShapes(8, 48, seed=7)
    b = SyntheticShapes(8, 48, seed=7)
    fwd = [a[i] for i in range(8)]
    bwd = [b[i] for i in reversed(range(8))][::-1]
    for (ia, ta), (ib, tb) in zip(fwd, bwd):
        assert torch.equal(ia, ib)
        for key in ("boxes", "labels", "masks", "area", "iscrowd"):
            assert torch.equal(ta[key], tb[key])
    assert torch.equal(a[2][0], a[2][0])
    c = SyntheticShapes(8, 48, seed=8)
    assert not torch.equal(a[0][0], c[0][0])


def test_overlaps_happen_and_instances_stay_visible():
    ds = SyntheticShapes(40, 64, min_shapes=3, max_shapes=4, seed=1)
    overlaps = 0
    for i in range(len(ds)):
        _, t = ds[i]
        b = t["boxes"]
        lt = torch.max(b[:, None, :2], b[None, :, :2])
        rb = torch.min(b[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        overlaps += int((inter.triu(1) > 0).sum())
        assert len(t["labels"]) <= 4
    assert overlaps > 10
    labels = torch.cat([ds[i][1]["labels"] for i in range(len(ds))])
    assert set(labels.tolist()) == {1, 2, 3}


@pytest.mark.parametrize("size", [(40, 100), (130, 57), 33])
def test_any_size(size):
    ds = SyntheticShapes(3, size, seed=2)
    h, w = (size, size) if isinstance(size, int) else size
    img, t = ds[1]
    assert img.shape == (3, h, w) and t["masks"].shape[1:] == (h, w)
    assert ds.get_height_and_width(0) == (h, w)
    assert (t["boxes"][:, 2] <= w).all() and (t["boxes"][:, 3] <= h).all()


def test_transforms_and_errors():
    def flip(img, t):
        t = dict(t)
        t["masks"] = t["masks"].flip(-1)
        return img.flip(-1), t

    plain, flipped = SyntheticShapes(2, 32), SyntheticShapes(2, 32, transforms=flip)
    assert torch.equal(plain[0][0].flip(-1), flipped[0][0])
    with pytest.raises(IndexError):
        plain[2]
    assert torch.equal(plain[-1][0], plain[1][0])
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes(2, (4, 32))
    with pytest.raises(ValueError, match="max_shapes"):
        SyntheticShapes(2, 32, min_shapes=3, max_shapes=2)
