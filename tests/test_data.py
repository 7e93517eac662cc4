"""maskrcnn_fast.data: CocoDetection, transforms, grouped batching, collate."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler, Subset

from maskrcnn_fast.data import (
    CocoDetection,
    Compose,
    GroupedBatchSampler,
    RandomHorizontalFlip,
    ToTensor,
    collate_fn,
    create_aspect_ratio_groups,
)
from maskrcnn_fast.data.images import load_image, read_rgb
from maskrcnn_fast.data.samplers import aspect_ratio_bins
from maskrcnn_fast.data.transforms import hflip
from support import needs_pycocotools
from support.coco import IMAGES, make_coco_folder, make_photo_coco_folder


@pytest.fixture
def coco(tmp_path):
    return make_coco_folder(tmp_path)


# ---- CocoDetection -------------------------------------------------------------------------------


@needs_pycocotools
def test_coco_labels_mapping(coco):
    root, ann, _ = coco
    ds = CocoDetection(root, ann)
    assert len(ds) == 3
    assert ds.num_classes == 4
    assert ds.classes == ["__background__", "circle", "blob", "square"]
    assert ds.label_to_cat_id == {1: 3, 2: 5, 3: 7}
    assert ds.cat_id_to_label == {3: 1, 5: 2, 7: 3}
    assert [ds.get_height_and_width(i) for i in range(3)] == [(h, w) for _, _, w, h in IMAGES]


@needs_pycocotools
def test_coco_items(coco):
    root, ann, expected = coco
    ds = CocoDetection(root, ann)
    for i, (img_id, name, w, h) in enumerate(IMAGES):
        image, t = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, h, w)
        png = np.array(Image.open(root / name).convert("RGB"))
        torch.testing.assert_close(image, torch.from_numpy(png).permute(2, 0, 1).float() / 255)
        assert t["image_id"] == img_id
        exp = expected[img_id]
        k = len(exp)
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (k, 4)
        assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == [ds.cat_id_to_label[c] for c, _, _ in exp]
        assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (k, h, w)
        assert t["iscrowd"].dtype == torch.int64 and t["iscrowd"].tolist() == [c for _, _, c in exp]
        assert t["area"].dtype == torch.float32
        for j, (_, m, _) in enumerate(exp):
            assert torch.equal(t["masks"][j], torch.from_numpy(m)), f"image {img_id} mask {j}"
            assert t["area"][j].item() == m.sum()
            ys, xs = np.nonzero(m)
            # These boxes are the masks' tight boxes in xyxy.
            assert t["boxes"][j].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@needs_pycocotools
def test_coco_filters(coco):
    root, ann, _ = coco
    ds = CocoDetection(root, ann, remove_images_without_annotations=True)
    assert ds.ids == [11, 12]
    _, t = CocoDetection(root, ann, skip_crowd=True)[0]
    assert t["iscrowd"].tolist() == [0, 0]


@needs_pycocotools
def test_coco_transforms_applied(coco):
    root, ann, _ = coco
    ds = CocoDetection(root, ann, transforms=RandomHorizontalFlip(p=1.0))
    image, t = ds[0]
    plain_image, plain_t = CocoDetection(root, ann)[0]
    assert torch.equal(image, plain_image.flip(-1))
    assert torch.equal(t["masks"], plain_t["masks"].flip(-1))


@needs_pycocotools
def test_coco_unreadable_image(tmp_path):
    root, ann, _ = make_coco_folder(tmp_path, corrupt=True)
    ds = CocoDetection(root, ann)
    with pytest.raises(OSError, match="bad.png"):
        ds[3]
    (root / "c.png").unlink()
    with pytest.raises(OSError, match="c.png"):
        ds[2]


@needs_pycocotools
def test_coco_size_mismatch(tmp_path):
    root, ann, _ = make_coco_folder(tmp_path)
    Image.new("RGB", (7, 9)).save(root / "c.png")
    with pytest.raises(ValueError, match="c.png"):
        CocoDetection(root, ann)[2]


@needs_pycocotools
def test_photo_folder_as_torchvision_trains(tmp_path):
    root, ann = make_photo_coco_folder(tmp_path)
    ds = CocoDetection(root, ann, remove_images_without_annotations=True, skip_crowd=True)
    assert ds.ids == [1, 2, 3, 4]
    assert ds.drops == {"images": 1, "crowd": 1, "clipped": 1, "empty": 2, "polygons": 0, "orphans": 0}
    assert ds.drop_summary() == (
        "instances.json: 4 of 5 images (1 without an annotation over 1 pixel wide and high: skipped); "
        "annotations: 1 iscrowd (not trained as objects), 2 of zero width or height inside the image (dropped), "
        "1 reaching outside the image (clipped to it)")
    _, t = ds[0]
    assert t["boxes"].tolist() == [[4, 4, 14, 12], [40, 20, 48, 30]]  # clipped to the 48-pixel width
    assert t["labels"].tolist() == [1, 2] and t["iscrowd"].tolist() == [0, 0]
    assert t["masks"].shape == (2, 32, 48)
    _, t = CocoDetection(root, ann)[0]  # for evaluation the crowd region stays, marked
    assert t["iscrowd"].tolist() == [0, 0, 1]
    assert CocoDetection(root, ann).drops == {"images": 0, "crowd": 0, "clipped": 1, "empty": 2, "polygons": 0, "orphans": 0}


@needs_pycocotools
def test_16_bit_png_scaled_to_unit_range(tmp_path):
    root, ann = make_photo_coco_folder(tmp_path)
    want = torch.arange(40 * 20, dtype=torch.float32).reshape(40, 20) * 80 / 65535
    image, _ = CocoDetection(root, ann)[2]
    assert image.shape == (3, 40, 20)
    for c in range(3):
        torch.testing.assert_close(image[c], want)
    assert read_rgb(str(root / "tall16.png")).dtype == np.uint16


@needs_pycocotools
def test_exif_orientation(tmp_path):
    root, ann = make_photo_coco_folder(tmp_path)
    shown = load_image(str(root / "phone.jpg"))
    assert shown.shape == (3, 40, 30)  # portrait, as the phone showed it
    assert shown[0, :, -8:].mean() > 0.9 and shown[1, :, -8:].mean() < 0.1  # red on the right
    assert shown[0, :, :15].mean() < 0.1
    assert load_image(str(root / "phone.jpg"), exif=False).shape == (3, 30, 40)
    image, _ = CocoDetection(root, ann)[3]  # annotated on the turned picture: turned
    assert torch.equal(image, shown)
    # annotated on the stored pixels (as COCO's own files are): left as stored
    js = json.loads(ann.read_text())
    js["images"][3].update(width=40, height=30)
    js["annotations"] = [a for a in js["annotations"] if a["image_id"] != 4]
    ann.write_text(json.dumps(js))
    image, _ = CocoDetection(root, ann)[3]
    assert image.shape == (3, 30, 40)


@needs_pycocotools
def test_coco_checks_at_construction(tmp_path):
    root, ann = make_photo_coco_folder(tmp_path)
    js = json.loads(ann.read_text())
    assert CocoDetection(root, ann).missing_images() == []
    (root / "wide2.png").unlink()
    assert CocoDetection(root, ann).missing_images() == [str(root / "wide2.png")]
    js["annotations"][2]["category_id"] = 9
    ann.write_text(json.dumps(js))
    with pytest.raises(ValueError, match=r"annotation 3 \(image 1\) has category_id 9, which is not in categories"):
        CocoDetection(root, ann)
    js["annotations"][2]["category_id"] = 1
    js["annotations"][0]["bbox"] = [1, 2, 3]
    ann.write_text(json.dumps(js))
    with pytest.raises(ValueError, match="annotation 1 .* bbox"):
        CocoDetection(root, ann)


@needs_pycocotools
def test_category_ids_as_labels(coco):
    root, ann, _ = coco
    ds = CocoDetection(root, ann)
    ds.use_category_ids_as_labels()  # as torchvision's COCO models predict them
    assert ds.num_classes == 8 and ds.label_to_cat_id == {i: i for i in range(1, 8)}
    assert ds.classes == ["__background__", "N/A", "N/A", "circle", "N/A", "blob", "N/A", "square"]
    assert ds[0][1]["labels"].tolist() == [7, 3, 5]


# ---- transforms ----------------------------------------------------------------------------------


def _random_target(g, h=23, w=31, k=5):
    masks = torch.zeros(k, h, w, dtype=torch.uint8)
    boxes = []
    for j in range(k):
        x1, y1 = torch.randint(0, w - 1, (), generator=g).item(), torch.randint(0, h - 1, (), generator=g).item()
        x2 = torch.randint(x1 + 1, w + 1, (), generator=g).item()
        y2 = torch.randint(y1 + 1, h + 1, (), generator=g).item()
        masks[j, y1:y2, x1:x2] = 1
        boxes.append([x1, y1, x2, y2])
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "masks": masks, "labels": torch.ones(k, dtype=torch.int64)}
    return torch.rand(3, h, w, generator=g), target


def _tight_boxes(masks):
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        out.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
    return torch.tensor(out, dtype=torch.float32)


def test_flip_consistent(seed):
    g = torch.Generator().manual_seed(seed)
    image, target = _random_target(g)
    fi, ft = hflip(image, target)
    assert torch.equal(fi, image.flip(-1))
    assert torch.equal(ft["boxes"], _tight_boxes(ft["masks"]))
    assert torch.equal(ft["labels"], target["labels"])
    ii, tt = hflip(fi, ft)
    assert torch.equal(ii, image)
    assert torch.equal(tt["boxes"], target["boxes"]) and torch.equal(tt["masks"], target["masks"])
    assert torch.equal(target["boxes"], _tight_boxes(target["masks"]))  # the input is untouched


def test_random_flip_probability_and_generator(seed):
    image, target = _random_target(torch.Generator().manual_seed(seed))
    i0, t0 = RandomHorizontalFlip(p=0.0)(image, target)
    assert i0 is image and t0 is target
    flips = []
    for _ in range(2):
        t = RandomHorizontalFlip(0.5, generator=torch.Generator().manual_seed(seed))
        flips.append([not torch.equal(t(image, target)[0], image) for _ in range(40)])
    assert flips[0] == flips[1] and 0 < sum(flips[0]) < 40
    img, none = RandomHorizontalFlip(p=1.0)(image, None)
    assert none is None and torch.equal(img, image.flip(-1))
    with pytest.raises(ValueError, match="p must be"):
        RandomHorizontalFlip(p=1.5)


def test_empty_target_flip():
    t = {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 5, 6, dtype=torch.uint8)}
    _, ft = hflip(torch.rand(3, 5, 6), t)
    assert ft["boxes"].shape == (0, 4) and ft["masks"].shape == (0, 5, 6)


def test_to_tensor_and_compose():
    arr = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    want = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    for x in (Image.fromarray(arr), arr, torch.from_numpy(arr).permute(2, 0, 1)):
        out, tgt = ToTensor()(x, {"a": 1})
        assert out.dtype == torch.float32 and tgt == {"a": 1}
        torch.testing.assert_close(out, want)
    out, _ = Compose([ToTensor(), RandomHorizontalFlip(1.0)])(arr, None)
    torch.testing.assert_close(out, want.flip(-1))
    with pytest.raises(TypeError, match="image must be"):
        ToTensor()(torch.zeros(3, 2, 2, dtype=torch.int32))


# ---- samplers ------------------------------------------------------------------------------------


class _Sizes(torch.utils.data.Dataset):
    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        return i

    def get_height_and_width(self, i):
        return self.sizes[i]


def _sizes(n=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randint(10, 60, (2,), generator=g).tolist()) for _ in range(n)]


@needs_pycocotools
def test_aspect_ratio_groups(coco):
    assert aspect_ratio_bins(0) == [1.0]
    bins = aspect_ratio_bins(2)
    assert len(bins) == 5 and bins[0] == 0.5 and bins[2] == 1.0 and bins[-1] == 2.0
    ds = _Sizes([(10, 30), (30, 10), (10, 10), (10, 11), (11, 10)])
    assert create_aspect_ratio_groups(ds, 0) == [1, 0, 1, 1, 0]
    assert create_aspect_ratio_groups(ds, 2) == [5, 0, 3, 3, 2]
    root, ann, _ = coco
    cds = CocoDetection(root, ann)  # 40x30, 20x50, 30x30 (w x h)
    assert create_aspect_ratio_groups(cds) == [1, 0, 1]
    assert create_aspect_ratio_groups(Subset(cds, [2, 1])) == [1, 0]
    with pytest.raises(TypeError, match="get_height_and_width"):
        create_aspect_ratio_groups([1, 2])


def _check_batches(batches, groups, batch_size, indices):
    for b in batches:
        assert 1 <= len(b) <= batch_size
        assert len({groups[i] for i in b}) == 1, b
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted(indices)


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_grouped_batch_sampler(seed, batch_size):
    ds = _Sizes(_sizes())
    groups = create_aspect_ratio_groups(ds, 1)
    sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    gbs = GroupedBatchSampler(sampler, groups, batch_size)
    batches = list(gbs)
    _check_batches(batches, groups, batch_size, range(len(ds)))
    assert len(gbs) == len(batches)
    # Full batches only with drop_last.
    dl = GroupedBatchSampler(SequentialSampler(ds), groups, batch_size, drop_last=True)
    full = list(dl)
    assert all(len(b) == batch_size for b in full) and len(dl) == len(full)
    # As a DataLoader batch_sampler.
    loader = DataLoader(ds, batch_sampler=gbs)
    assert sorted(i for b in loader for i in b.tolist()) == list(range(len(ds)))


def test_grouped_batch_sampler_distributed():
    ds = _Sizes(_sizes(40))
    groups = create_aspect_ratio_groups(ds, 0)
    seen = []
    for rank in range(2):
        s = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        gbs = GroupedBatchSampler(s, groups, 3)
        gbs.set_epoch(1)
        batches = list(gbs)
        _check_batches(batches, groups, 3, list(s))
        assert len(gbs) == len(batches)
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(40))


def test_grouped_batch_sampler_bad_size():
    with pytest.raises(ValueError, match="batch_size"):
        GroupedBatchSampler(SequentialSampler(range(3)), [0, 0, 0], 0)
    with pytest.raises(ValueError, match="exclude"):
        GroupedBatchSampler(SequentialSampler(range(3)), [0, 0, 0], 2, drop_last=True, fill_last=True)


@pytest.mark.parametrize("batch_size", [2, 3, 5])
def test_grouped_batch_sampler_fills_leftovers(seed, batch_size):
    # torchvision's way: each group's leftovers are topped up with that group's first indices
    # of the epoch, so every batch is full and one group; unlike torchvision's, none is left out
    ds = _Sizes(_sizes(23, seed))
    groups = create_aspect_ratio_groups(ds, 1)
    sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    gbs = GroupedBatchSampler(sampler, groups, batch_size, fill_last=True)
    batches = list(gbs)
    assert len(batches) == len(gbs) == gbs.natural_len()
    assert all(len(b) == batch_size and len({groups[i] for i in b}) == 1 for b in batches)
    assert {i for b in batches for i in b} == set(range(len(ds)))
    counts = {g: groups.count(g) for g in set(groups)}
    assert len(batches) == sum(-(-c // batch_size) for c in counts.values())
    # an image alone in its group: a batch of it repeated
    solo = GroupedBatchSampler(SequentialSampler(range(3)), [0, 1, 0], 2, fill_last=True)
    assert list(solo) == [[0, 2], [1, 1]]
    assert list(GroupedBatchSampler(SequentialSampler(range(1)), [0], 3, fill_last=True)) == [[0, 0, 0]]


def test_grouped_batch_sampler_pads_to_num_batches():
    # ranks of a distributed run step together: the one with fewer batches repeats its first
    gbs = GroupedBatchSampler(SequentialSampler(range(5)), [0, 1, 0, 1, 0], 2, fill_last=True, num_batches=5)
    assert list(gbs) == [[0, 2], [1, 3], [4, 0], [0, 2], [1, 3]]
    assert len(gbs) == 5 and gbs.natural_len() == 3
    more = GroupedBatchSampler(SequentialSampler(range(5)), [0] * 5, 1, num_batches=2)
    assert len(list(more)) == len(more) == 5  # more batches are not cut


# ---- collate -------------------------------------------------------------------------------------


@needs_pycocotools
def test_collate(coco):
    root, ann, _ = coco
    ds = CocoDetection(root, ann)
    images, targets = collate_fn([ds[0], ds[1]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert [im.shape for im in images] == [(3, 30, 40), (3, 50, 20)]
    assert [t["image_id"] for t in targets] == [11, 12]
    loader = DataLoader(ds, batch_size=2, collate_fn=collate_fn)
    got = [(len(i), len(t)) for i, t in loader]
    assert got == [(2, 2), (1, 1)]
    assert collate_fn([]) == ([], [])
