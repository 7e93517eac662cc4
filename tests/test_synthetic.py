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


# ---- the implementation before per-box rasterisation (issue 18), kept as the reference ---------
# Each shape cost whole-image array work; the per-box one must give the same items bit for bit
# (with min_area given where the default now differs, up to 64 shapes: see the colour rule).
def _reference_item(ds, index):
    import numpy as np

    h, w = ds.image_size
    ys = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(w, dtype=np.float32) + 0.5)[None, :]

    def shape_mask(label, cx, cy, s, angle):
        dx, dy = xs - cx, ys - cy
        if label == 1:
            return dx * dx + dy * dy <= s * s
        if label == 2:
            return (np.abs(dx) <= s) & (np.abs(dy) <= s)
        a = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        vx, vy = cx + s * np.cos(a), cy + s * np.sin(a)
        inside = np.ones((h, w), dtype=bool)
        for k in range(3):
            x0, y0, x1, y1 = vx[k], vy[k], vx[(k + 1) % 3], vy[(k + 1) % 3]
            inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= 0
        return inside

    def contrasting(rng, others, min_dist):
        best, best_d = None, -1.0
        for _ in range(50):
            c = rng.uniform(0.0, 1.0, 3)
            d = min(float(np.abs(c - o).max()) for o in others)
            if d >= min_dist:
                return c
            if d > best_d:
                best, best_d = c, d
        return best

    rng = np.random.default_rng([ds.seed, index])
    side = min(h, w)
    bg = rng.uniform(0.0, 1.0, 3)
    n = int(rng.integers(ds.min_shapes, ds.max_shapes + 1))
    labels, visible, full_area, colours = [], [], [], []
    image = np.empty((h, w, 3), dtype=np.float32)
    image[:] = bg
    for _ in range(n):
        for _try in range(30):
            label = int(rng.integers(1, 4))
            s = rng.uniform(*ds.size_range) * side
            cx = rng.uniform(s, w - s) if w > 2 * s else w / 2
            cy = rng.uniform(s, h - s) if h > 2 * s else h / 2
            angle = rng.uniform(0.0, 2 * np.pi)
            m = shape_mask(label, cx, cy, s, angle)
            area = int(m.sum())
            if area < ds.min_area:
                continue
            if all(int((v & ~m).sum()) >= max(ds.min_visible * a, ds.min_area) for v, a in zip(visible, full_area)):
                break
        else:
            continue
        colour = contrasting(rng, [bg] + colours, 0.35)
        for j, v in enumerate(visible):
            visible[j] = v & ~m
        image[m] = colour
        labels.append(label)
        visible.append(m)
        full_area.append(area)
        colours.append(colour)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= 0.03
    image += noise
    np.clip(image, 0.0, 1.0, out=image)
    masks = torch.from_numpy(np.stack(visible).astype(np.uint8)) if labels else torch.zeros(0, h, w, dtype=torch.uint8)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.tensor(labels), masks


@pytest.mark.parametrize("size, kwargs", [
    (64, {}), (128, {}), ((130, 57), {}), ((40, 100), {"min_area": 16}), (48, {"min_area": 16}),
    (96, {"min_shapes": 10, "max_shapes": 30, "size_range": (0.05, 0.2), "min_area": 16}),
    (160, {"min_shapes": 40, "max_shapes": 64, "size_range": (0.03, 0.08), "min_area": 10, "min_visible": 0.3}),
    (120, {"min_shapes": 20, "max_shapes": 40, "size_range": (0.04, 0.1), "min_area": 6, "min_visible": 0.8}),
])
def test_same_items_as_the_whole_image_implementation(seed, size, kwargs):
    ds = SyntheticShapes(3, size, seed=seed, **kwargs)
    for i in range(len(ds)):
        img, t = ds[i]
        ref_img, ref_labels, ref_masks = _reference_item(ds, i)
        assert torch.equal(img, ref_img)
        assert torch.equal(t["labels"], ref_labels)
        assert torch.equal(t["masks"], ref_masks)
        torch.testing.assert_close(t["boxes"], _boxes_from_masks(ref_masks), rtol=0, atol=0)
        torch.testing.assert_close(t["area"], ref_masks.flatten(1).sum(1).float(), rtol=0, atol=0)


def test_default_min_area_scales_with_size_range():
    # unchanged where the smallest shapes were kept: max(16, 0.2 % of the image)
    assert SyntheticShapes(1, 64).min_area == 16 and SyntheticShapes(1, 128).min_area == 32
    assert SyntheticShapes(1, 1024, size_range=(0.1, 0.2)).min_area == int(0.002 * 1024 * 1024)
    # small shapes: at most half the smallest triangle's area (issue 18: this one crashed)
    ds = SyntheticShapes(2, image_size=1024, min_shapes=20, max_shapes=20, size_range=(0.01, 0.02))
    assert ds.min_area <= 0.5 * 1.3 * 10.24 ** 2
    for i in range(len(ds)):
        _, t = ds[i]
        assert len(t["labels"]) >= 15 and (t["area"] >= ds.min_area).all()
        torch.testing.assert_close(t["boxes"], _boxes_from_masks(t["masks"]), rtol=0, atol=0)


def test_all_shapes_rejected_gives_an_empty_target(seed):
    # every square of half-side 6.4 covers fewer than 190 pixels, so none is kept
    ds = SyntheticShapes(2, 64, min_shapes=3, max_shapes=5, size_range=(0.1, 0.1), min_area=190, seed=seed)
    img, t = ds[1]
    assert img.shape == (3, 64, 64) and 0 <= img.min() and img.max() <= 1
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32
    assert t["labels"].shape == (0,) and t["labels"].dtype == torch.int64
    assert t["masks"].shape == (0, 64, 64) and t["masks"].dtype == torch.uint8
    assert t["area"].shape == (0,) and t["area"].dtype == torch.float32
    assert t["iscrowd"].shape == (0,) and t["image_id"] == 1


def test_bad_arguments_name_the_argument():
    for kwargs, match in [
        ({"min_area": 10_000}, "min_area"),  # more than any shape of size_range covers
        ({"min_area": 0}, "min_area must be >= 1"),
        ({"min_visible": 1.5}, "min_visible"),
        ({"min_shapes": 0}, "min_shapes must be >= 1"),
        ({"min_shapes": 5, "max_shapes": 3}, "max_shapes must be >= min_shapes"),
        ({"size_range": (0.2, 0.1)}, "size_range"),
        ({"size_range": (0.0, 0.1)}, "size_range"),
        ({"size_range": (0.1, 0.6)}, "size_range"),
        ({"size_range": 0.1}, "size_range"),
    ]:
        with pytest.raises(ValueError, match=match):
            SyntheticShapes(1, 64, **kwargs)


def test_dense_scenes(seed):
    # many small shapes: past the 64th, colours differ from the neighbours' (work per box)
    ds = SyntheticShapes(2, 256, min_shapes=300, max_shapes=500, size_range=(0.01, 0.03), seed=seed)
    for i in range(len(ds)):
        img, t = ds[i]
        m = t["masks"]
        k = len(t["labels"])
        assert k > 150 and m.shape == (k, 256, 256) and m.dtype == torch.uint8
        torch.testing.assert_close(t["boxes"], _boxes_from_masks(m), rtol=0, atol=0)
        torch.testing.assert_close(t["area"], m.flatten(1).sum(1).float(), rtol=0, atol=0)
        assert (m.sum(0) <= 1).all() and (t["area"] >= ds.min_area).all()
        assert set(t["labels"].tolist()) == {1, 2, 3}
        means = torch.stack([img[:, mk.bool()].mean(1) for mk in m])  # [K, 3]
        stds = torch.stack([img[:, mk.bool()].std(1) for mk in m if mk.sum() > 1])
        assert (stds < 0.06).all()
        # touching shapes mostly differ clearly (the rule allows the farthest of 50 draws)
        b = t["boxes"]
        near = ((b[:, None, :2] - 2 < b[None, :, 2:]) & (b[None, :, :2] - 2 < b[:, None, 2:])).all(-1)
        near = near.triu(1).nonzero()  # pairs i < j whose boxes come within 2 pixels
        late = near[near[:, 1] >= 64]
        diff = (means[late[:, 0]] - means[late[:, 1]]).abs().amax(1)
        assert len(late) > 50 and (diff > 0.2).float().mean() > 0.9
    assert torch.equal(ds[1][1]["masks"], t["masks"]) and torch.equal(ds[1][0], img)


# ---- the command line's shape options -------------------------------------------------------------
def test_samples_cli_shape_options(tmp_path, capsys):
    from maskrcnn_fast.cli.samples import main
    from maskrcnn_fast.data.images import load_image

    assert main(["--out", str(tmp_path), "--num", "1", "--seed", "4", "--image-size", "96", "--min-shapes", "40",
                 "--max-shapes", "60", "--size-range", "0.03", "0.06"]) == 0
    img = load_image(str(tmp_path / "shapes_4_0000.png"))
    want = SyntheticShapes(1, 96, seed=4, min_shapes=40, max_shapes=60, size_range=(0.03, 0.06))[0][0]
    assert (img - want).abs().max() <= 0.5 / 255 + 1e-6
    for argv, match in [(["--min-shapes", "0"], "--min-shapes must be >= 1, got 0"),
                        (["--min-shapes", "5", "--max-shapes", "3"], "--max-shapes must be >= --min-shapes (5), got 3"),
                        (["--size-range", "0.2", "0.1"], "--size-range LO HI needs LO <= HI"),
                        (["--size-range", "0", "0.1"], "--size-range must be in (0, 0.5]")]:
        with pytest.raises(SystemExit) as e:
            main(["--out", str(tmp_path / "bad"), *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and match in err.strip().splitlines()[-1], err
        assert "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_train_and_eval_shape_options(capsys):
    import argparse

    from maskrcnn_fast.cli.datasets import dataset_from_args
    from support.cli import cli_fails

    for cmd in (["train", "--num-images", "2", "--device", "cpu", "--iterations", "1"],
                ["eval", "--checkpoint", "x.pt", "--device", "cpu"]):
        cli_fails(capsys, cmd + ["--min-shapes", "0"], "--min-shapes must be >= 1, got 0")
        cli_fails(capsys, cmd + ["--max-shapes", "0"], "--max-shapes must be >= 1, got 0")
        cli_fails(capsys, cmd + ["--size-range", "0.1", "0.9"], "--size-range must be in (0, 0.5]")
    cli_fails(capsys, ["train", "--num-images", "2", "--device", "cpu", "--min-shapes", "3", "--max-shapes", "2"],
              "--max-shapes must be >= --min-shapes (3), got 2")
    cli_fails(capsys, ["train", "--num-images", "2", "--device", "cpu", "--size-range", "0.3", "0.2"],
              "--size-range LO HI needs LO <= HI, got 0.3 0.2")
    args = argparse.Namespace(dataset="synthetic", data_seed=5, num_images=3, image_size=64, min_shapes=10,
                              max_shapes=None, size_range=[0.05, 0.1])
    ds = dataset_from_args(args, train=True)
    assert (ds.min_shapes, ds.max_shapes, ds.size_range, ds.seed, len(ds)) == (10, 10, (0.05, 0.1), 5, 3)
    assert ds.mask_format == "packed"  # the command line trains and evaluates on compact masks
    args.min_shapes, args.size_range = None, None
    ds = dataset_from_args(args, train=True)
    assert (ds.min_shapes, ds.max_shapes, ds.size_range) == (1, 4, (0.1, 0.25))
