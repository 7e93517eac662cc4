"""The data sets' compact masks (mask_format="packed"): the same masks as the dense format,
decoded straight to crops (COCO polygons and RLE), flips, batching, and bad annotations."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler

from maskrcnn_fast.data import (
    CocoDetection,
    GroupedBatchSampler,
    RandomHorizontalFlip,
    SyntheticShapes,
    collate_fn,
    create_aspect_ratio_groups,
)
from maskrcnn_fast.data.segmentations import decode_segmentation_crop, rle_string_counts
from maskrcnn_fast.structures import PackedMasks
from support import needs_pycocotools
from support.coco import make_coco_folder, make_photo_coco_folder


def _same_items(a, b):
    (ia, ta), (ib, tb) = a, b
    assert torch.equal(ia, ib)
    assert isinstance(tb["masks"], PackedMasks) and isinstance(ta["masks"], torch.Tensor)
    assert torch.equal(tb["masks"].to_dense(), ta["masks"])
    for k in ("boxes", "labels", "area", "iscrowd"):
        assert torch.equal(ta[k], tb[k]), k
    assert ta["image_id"] == tb["image_id"]


# ---- SyntheticShapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(), dict(image_size=(70, 130), min_shapes=20, max_shapes=60,
                                                   size_range=(0.02, 0.08))])
def test_synthetic_packed_is_the_dense_masks(seed, kwargs):
    dense = SyntheticShapes(3, seed=seed, **kwargs)
    packed = SyntheticShapes(3, seed=seed, mask_format="packed", **kwargs)
    for i in range(3):
        _same_items(dense[i], packed[i])
        crops = packed[i][1]["masks"].crops
        assert bool((crops[:, 3] > 0).all() and (crops[:, 4] > 0).all())  # every shape keeps pixels


def test_synthetic_packed_flip_and_bad_format(seed):
    flip = RandomHorizontalFlip(1.0)
    dense = SyntheticShapes(2, seed=seed, transforms=flip)
    packed = SyntheticShapes(2, seed=seed, transforms=flip, mask_format="packed")
    _same_items(dense[1], packed[1])
    with pytest.raises(ValueError, match="mask_format must be 'dense' or 'packed'"):
        SyntheticShapes(2, mask_format="rle")


def test_packed_batches_group_and_collate(seed):
    ds = SyntheticShapes(5, image_size=64, seed=seed, mask_format="packed")
    groups = create_aspect_ratio_groups(ds, k=1)
    sampler = GroupedBatchSampler(SequentialSampler(ds), groups, 2)
    batches = list(DataLoader(ds, batch_sampler=sampler, collate_fn=collate_fn))
    assert sum(len(images) for images, _ in batches) == 5
    for images, targets in batches:
        assert all(isinstance(t["masks"], PackedMasks) and t["masks"].shape[1:] == im.shape[1:]
                   for im, t in zip(images, targets))


# ---- COCO: straight to crops ---------------------------------------------------------------------


@needs_pycocotools
def test_coco_packed_is_the_dense_masks(tmp_path):
    root, ann, _ = make_coco_folder(tmp_path / "a")
    for kw in (dict(), dict(skip_crowd=True, transforms=RandomHorizontalFlip(1.0))):
        dense, packed = CocoDetection(root, ann, **kw), CocoDetection(root, ann, mask_format="packed", **kw)
        for i in range(len(dense)):
            _same_items(dense[i], packed[i])
    root, ann = make_photo_coco_folder(tmp_path / "b")
    dense, packed = CocoDetection(root, ann), CocoDetection(root, ann, mask_format="packed")
    for i in range(len(dense)):
        _same_items(dense[i], packed[i])
    with pytest.raises(ValueError, match="mask_format must be"):
        CocoDetection(root, ann, mask_format="rle")


def _random_polygons(rng, h, w):
    polys = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(3, 14))
        cx, cy, r = rng.uniform(-10, w + 10), rng.uniform(-10, h + 10), rng.uniform(0.5, 40)
        a = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
        polys.append(np.round(pts, int(rng.integers(0, 3))).reshape(-1).tolist())  # COCO's decimals
    return polys


@needs_pycocotools
def test_segmentation_crops_are_the_full_decode_cropped(seed):
    """Polygons (with COCO's decimals, reaching outside the image), uncompressed and compressed
    RLE: the crop is exactly the tight crop of pycocotools' full-image decode. (A polygon moved
    into its box's frame would not be: pycocotools rounds 5 * x + 0.5, and 5 * (x - x0) rounds
    otherwise; the crop is cut from the image-frame runs instead.)"""
    from pycocotools import mask as mask_utils

    from maskrcnn_fast.data.coco import decode_segmentation

    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        polys = _random_polygons(rng, h, w)
        full = decode_segmentation(polys, h, w)
        rle = mask_utils.encode(np.asfortranarray(full))
        uncompressed = {"size": [h, w], "counts": _runs(full)}
        for segm in (polys, rle, {"size": [h, w], "counts": rle["counts"].decode()}, uncompressed):
            x0, y0, crop = decode_segmentation_crop(segm, h, w)
            ys, xs = np.nonzero(full)
            if ys.size == 0:
                assert crop.shape == (0, 0)
                continue
            assert (x0, y0) == (xs.min(), ys.min())
            assert np.array_equal(crop, full[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def _runs(mask):
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


@needs_pycocotools
def test_compressed_rle_strings_decode_like_pycocotools(seed):
    from pycocotools import _mask

    rng = np.random.default_rng(seed)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        rle = _mask.encode(np.asfortranarray(m[:, :, None]))[0]
        want = _runs(m)
        assert rle_string_counts(rle["counts"]).tolist() == want


# ---- bad annotations -----------------------------------------------------------------------------


def _photo(tmp_path, edit):
    root, ann = make_photo_coco_folder(tmp_path)
    js = json.loads(ann.read_text())
    edit(js)
    ann.write_text(json.dumps(js))
    return root, ann


@needs_pycocotools
def test_rle_of_another_size_named_at_construction(tmp_path):
    def edit(js):
        a = js["annotations"][1]
        img = next(i for i in js["images"] if i["id"] == a["image_id"])
        a["segmentation"] = {"size": [img["height"] + 1, img["width"]], "counts": [img["height"] * img["width"]]}

    root, ann = _photo(tmp_path, edit)
    with pytest.raises(ValueError, match=r"annotation 2 \(image \d+\) has a segmentation RLE of size"):
        CocoDetection(root, ann, mask_format="packed")
    with pytest.raises(ValueError, match=r"annotation 2 .* RLE of size"):
        CocoDetection(root, ann)


@needs_pycocotools
def test_bad_segmentation_forms_named(tmp_path):
    root, ann = _photo(tmp_path, lambda js: js["annotations"][0].update(segmentation=[["a", 1, 2]]))
    with pytest.raises(ValueError, match=r"annotation 1 .* polygon 0 is not a list of numbers"):
        CocoDetection(root, ann)
    root, ann = _photo(tmp_path / "b", lambda js: js["annotations"][0].update(segmentation="x"))
    with pytest.raises(ValueError, match=r"annotation 1 .* of type str"):
        CocoDetection(root, ann)


@needs_pycocotools
def test_rle_counts_not_covering_the_image_named_when_read(tmp_path):
    def edit(js):
        a = js["annotations"][0]
        img = next(i for i in js["images"] if i["id"] == a["image_id"])
        a["segmentation"] = {"size": [img["height"], img["width"]], "counts": [3, 4]}

    root, ann = _photo(tmp_path, edit)
    for fmt in ("packed", "dense"):
        ds = CocoDetection(root, ann, mask_format=fmt)
        with pytest.raises(ValueError, match=r"annotation 1 \(image 1\): segmentation RLE counts cover 7 pixels"):
            ds[0]


@needs_pycocotools
def test_short_polygons_skipped_and_empty_masks_kept(tmp_path):
    """A polygon of fewer than 3 points is skipped (counted in drops); an annotation left with no
    pixel keeps its box with an empty mask (an empty crop), as in the dense format; nothing else
    of the image is lost."""
    def edit(js):
        a = js["annotations"][0]
        a["segmentation"] = [[1.0, 1.0, 5.0, 1.0]]  # 2 points
        b = js["annotations"][1]
        b["segmentation"] = b["segmentation"] + [[2.0, 2.0, 3.0, 3.0]] if isinstance(b["segmentation"], list) \
            else b["segmentation"]

    root, ann = _photo(tmp_path, edit)
    dense, packed = CocoDetection(root, ann), CocoDetection(root, ann, mask_format="packed")
    assert packed.drops["polygons"] >= 1 and "polygons of fewer than 3 points (skipped)" in packed.drop_summary()
    for i in range(len(dense)):
        _same_items(dense[i], packed[i])
    _, t = packed[0]
    j = [k for k, a in enumerate(packed.coco.imgToAnns[packed.ids[0]]) if a["id"] == 1]
    assert j and t["masks"].crops[j[0], 3:].tolist() == [0, 0]


@needs_pycocotools
def test_coco_packed_item_memory_grows_with_the_objects(tmp_path, seed):
    """One 512 x 512 image with 150 small objects (polygons, compressed and uncompressed RLE):
    reading the packed item takes under a tenth of the K x H x W bytes the dense item does
    (numpy's allocations, traced), and gives the same masks."""
    import tracemalloc

    from PIL import Image
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    h = w = 512
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "a.png")
    anns = []
    for i in range(150):
        cx, cy, r = rng.uniform(15, w - 15), rng.uniform(15, h - 15), rng.uniform(3, 12)
        a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        poly = np.round(np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1), 2).reshape(-1).tolist()
        segm = [poly]
        if i % 3:
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
            m = mask_utils.decode(rle)
            segm = {"size": [h, w], "counts": rle["counts"].decode()} if i % 3 == 1 else \
                {"size": [h, w], "counts": _runs(m)}
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1.0,
                     "bbox": [cx - r, cy - r, 2 * r, 2 * r], "segmentation": segm})
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
                               "annotations": anns, "categories": [{"id": 1, "name": "c"}]}))
    peaks, items = {}, {}
    for fmt in ("dense", "packed"):
        ds = CocoDetection(tmp_path, ann, mask_format=fmt)
        tracemalloc.start()
        try:
            items[fmt] = ds[0]
            peaks[fmt] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    full = 150 * h * w
    assert peaks["dense"] >= full  # what the bound rules out (the probe sees it)
    assert peaks["packed"] < full / 10, peaks
    _same_items(items["dense"], items["packed"])
