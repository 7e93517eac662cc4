"""maskrcnn_fast.structures.PackedMasks through the training path: the structure, its targets
against torchvision's full-size path, the model's losses, the memory rule, bad input.

The rule tested (issue 18): masks kept as crops, flipped, lazily resized with the image and
sampled by ``packed_mask_targets`` give
- the masks torchvision's ``GeneralizedRCNNTransform`` resizes, bit for bit (``to_dense``);
- bit for bit our full-size ``mask_targets`` of those resized masks (the nearest rule maps each
  resized pixel to one source pixel with torch's own float32 index arithmetic, so the op samples
  the same numbers with the same roi_align arithmetic);
- torchvision's ``project_masks_on_boxes`` within 1e-6 (its roi_align sums in another order:
  the tolerance of tests/test_mask_targets.py).
"""
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from maskrcnn_fast.data.transforms import hflip
from maskrcnn_fast.models.roi_heads import maskrcnn_loss
from maskrcnn_fast.models.transform import ImageTransform
from maskrcnn_fast.ops import mask_targets, packed_mask_targets
from maskrcnn_fast.structures import PackedMasks, nearest_source_index

pytestmark = pytest.mark.usefixtures("one_thread")


def random_masks(g: torch.Generator, k: int, h: int, w: int) -> torch.Tensor:
    """uint8 [k, h, w]: ellipses and rectangles with holes, some at the borders, some empty,
    one possibly the whole image."""
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    out = torch.zeros(k, h, w, dtype=torch.uint8)
    for j in range(k):
        kind = int(torch.randint(0, 6, (1,), generator=g))
        if kind == 0:
            continue  # empty
        if kind == 1 and j == 0:
            out[j] = 1
            continue
        cy, cx = (torch.rand(2, generator=g) * torch.tensor([h + 8.0, w + 8.0]) - 4).tolist()
        ry, rx = (1 + torch.rand(2, generator=g) * torch.tensor([h / 3, w / 3])).tolist()
        if kind in (2, 3):
            m = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        else:
            m = ((ys - cy).abs() <= ry) & ((xs - cx).abs() <= rx)
        if kind == 3 or kind == 5:
            m &= torch.rand(h, w, generator=g) < 0.8  # holes
        out[j] = m
    return out


def random_boxes(g, n, h, w):
    x = torch.rand(n, 2, generator=g) * (w * 1.2) - 0.1 * w
    y = torch.rand(n, 2, generator=g) * (h * 1.2) - 0.1 * h
    b = torch.stack([x.min(1).values, y.min(1).values, x.max(1).values + 0.5, y.max(1).values + 0.5], 1)
    tiny = torch.rand(n, generator=g) < 0.2
    b[tiny, 2:] = b[tiny, :2] + torch.rand(int(tiny.sum()), 2, generator=g) * 2  # under a few pixels
    return b


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if ys.numel() else [0, 0, 1, 1])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


# ---- the structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool])
def test_from_dense_round_trip_and_tight_crops(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        k, h, w = (int(v) for v in torch.randint(1, 40, (3,), generator=g))
        dense = random_masks(g, k, h, w).to(dtype)
        pm = PackedMasks.from_dense(dense)
        assert len(pm) == k and pm.shape == (k, h, w) and pm.size == pm.out_size == (h, w)
        assert torch.equal(pm.to_dense(), dense.to(torch.uint8))
        for j in range(k):
            off, x0, y0, cw, ch = pm.crops[j].tolist()
            ys, xs = torch.nonzero(dense[j], as_tuple=True)
            if ys.numel() == 0:
                assert cw == ch == 0
            else:
                assert (x0, y0, cw, ch) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
                assert torch.equal(pm.crop(j), dense[j, y0:y0 + ch, x0:x0 + cw].to(torch.uint8))
        assert pm.nbytes == pm.data.numel() + 40 * k
        # any strides: a flipped view and a transposed one read in place
        assert torch.equal(PackedMasks.from_dense(dense.flip(-1)).to_dense(), dense.flip(-1).to(torch.uint8))
        assert torch.equal(PackedMasks.from_dense(dense.transpose(1, 2)).to_dense(),
                           dense.transpose(1, 2).to(torch.uint8))


def test_nearest_source_index_is_torchs_rule(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [(int(a), int(b)) for a, b in torch.randint(1, 700, (40, 2), generator=g)] + [(5, 10), (7, 7), (1, 9)]
    for n_in, n_out in sizes:
        x = torch.arange(n_in, dtype=torch.float32)[None, None, None, :]
        want = F.interpolate(x, size=(1, n_out), mode="nearest")[0, 0, 0].to(torch.int64)
        assert torch.equal(nearest_source_index(n_out, n_in), want), (n_in, n_out)


def test_resize_and_flip_are_the_dense_ones(seed):
    """resize: F.interpolate(nearest, size=out_size); flip before and after a resize; a second
    resize composes (materialised); subsets; the 2x and equal-size cases."""
    g = torch.Generator().manual_seed(seed)
    for t in range(30):
        k, h, w = (int(v) for v in torch.randint(1, 50, (3,), generator=g))
        dense = random_masks(g, k, h, w)
        pm = PackedMasks.from_dense(dense)
        oh, ow = (int(v) for v in torch.randint(1, 120, (2,), generator=g))
        if t % 6 == 0:
            oh, ow = 2 * h, 2 * w
        elif t % 6 == 1:
            oh, ow = h, w
        want = F.interpolate(dense[:, None].float(), size=(oh, ow), mode="nearest")[:, 0].byte()
        r = pm.resize(oh, ow)
        assert r.shape == (k, oh, ow) and r.out_size == (oh, ow) and r.size == (h, w)
        assert r.data is pm.data  # lazy: nothing resized yet
        assert torch.equal(r.to_dense(), want)
        assert torch.equal(pm.flip().resize(oh, ow).to_dense(),
                           F.interpolate(dense.flip(-1)[:, None].float(), size=(oh, ow), mode="nearest")[:, 0].byte())
        assert torch.equal(r.flip().to_dense(), want.flip(-1))
        assert torch.equal(r.flip(-2).to_dense(), want.flip(-2))
        assert torch.equal(pm.flip().flip().to_dense(), dense)
        oh2, ow2 = (int(v) for v in torch.randint(1, 80, (2,), generator=g))
        want2 = F.interpolate(want[:, None].float(), size=(oh2, ow2), mode="nearest")[:, 0].byte()
        assert torch.equal(r.resize(oh2, ow2).to_dense(), want2)
        m = r.materialize()
        assert m.size == m.out_size == (oh, ow) and torch.equal(m.to_dense(), want)
        keep = torch.rand(k, generator=g) < 0.5
        assert torch.equal(r[keep].to_dense(), want[keep])
        idx = torch.randperm(k, generator=g)
        assert torch.equal(r[idx].to_dense(), want[idx])
        assert torch.equal(r[1:].to_dense(), want[1:])
        assert torch.equal(r[idx.tolist()].flip().to_dense(), want[idx].flip(-1))


def test_cat_instances_and_to(seed, device):
    g = torch.Generator().manual_seed(seed)
    packs = [PackedMasks.from_dense(random_masks(g, k, 20 + k, 30)).resize(25 + k, 17) for k in (3, 0, 5)]
    packs[2] = packs[2][torch.tensor([4, 0, 2])]  # a subset shares its data
    data, inst = PackedMasks.cat(packs)
    assert data.dtype == torch.uint8 and inst.dtype == torch.int64 and inst.shape == (6, 9)
    row = 0
    base = 0
    for pm in packs:
        for j in range(len(pm)):
            off, x0, y0, w, h, sh, sw, oh, ow = inst[row].tolist()
            assert (sh, sw, oh, ow) == (*pm.size, *pm.out_size)
            assert [off - base, x0, y0, w, h] == pm.crops[j].tolist()
            assert torch.equal(data[off:off + w * h], pm.crop(j).reshape(-1))
            row += 1
        base += pm.data.numel()
    back = pickle.loads(pickle.dumps(packs[2]))  # DataLoader workers pass items so
    assert back.size == packs[2].size and back.out_size == packs[2].out_size
    assert torch.equal(back.to_dense(), packs[2].to_dense())
    moved = packs[0].to(device)
    assert moved.device.type == torch.device(device).type
    assert torch.equal(moved.to_dense().cpu(), packs[0].to_dense())
    assert moved.instances().device == moved.device


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(4, dtype=torch.float32), torch.zeros(0, 5, dtype=torch.int64), (4, 4)), "data must be a uint8"),
        ((torch.zeros(4, dtype=torch.uint8), torch.zeros(1, 4, dtype=torch.int64), (4, 4)), "crops must be an int64"),
        ((torch.zeros(4, dtype=torch.uint8), torch.zeros(1, 5, dtype=torch.int32), (4, 4)), "crops must be an int64"),
        ((torch.zeros(4, dtype=torch.uint8), torch.zeros(0, 5, dtype=torch.int64), (4, -1)), "size must be two"),
        ((torch.zeros(4, dtype=torch.uint8), torch.zeros(0, 5, dtype=torch.int64), (4,)), "size must be two"),
        ((torch.zeros(4, dtype=torch.uint8), torch.tensor([[0, 3, 0, 2, 2]]), (4, 4)),
         r"crops row 0: crop \(x0, y0, width, height\) = \(3, 0, 2, 2\) outside the 4 x 4"),
        ((torch.zeros(8, dtype=torch.uint8), torch.tensor([[0, 0, 0, 2, 2], [0, 0, -1, 1, 1]]), (4, 4)),
         r"crops row 1: crop .* outside"),
        ((torch.zeros(4, dtype=torch.uint8), torch.tensor([[0, 0, 0, -2, 2]]), (4, 4)), "crops row 0: negative width"),
        ((torch.zeros(3, dtype=torch.uint8), torch.tensor([[0, 0, 0, 2, 2]]), (4, 4)),
         r"crops row 0: offset 0 \+ 2 x 2 bytes is outside data \(3 bytes\)"),
    ],
)
def test_bad_arguments_name_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        PackedMasks(*args)


def test_bad_calls():
    pm = PackedMasks.from_dense(torch.ones(2, 3, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="masks must be a uint8 or bool Tensor"):
        PackedMasks.from_dense(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="masks must be a uint8 or bool Tensor"):
        PackedMasks.from_dense(torch.ones(3, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="must be positive"):
        pm.resize(0, 4)
    with pytest.raises(ValueError, match="dims must be -1"):
        pm.flip(0)
    with pytest.raises(TypeError, match="crop"):
        pm[0]
    with pytest.raises(ValueError, match=r"a bool index must be Tensor\[2\]"):
        pm[torch.tensor([True])]
    with pytest.raises(ValueError, match=r"masks\[1\] must be a PackedMasks"):
        PackedMasks.cat([pm, torch.ones(2, 3, 4)])


# ---- against torchvision's full-size path --------------------------------------------------------


def _tv_transform(training, min_size, max_size, fixed_size=None):
    return torchvision.models.detection.transform.GeneralizedRCNNTransform(
        min_size, max_size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], fixed_size=fixed_size).train(training)


def test_targets_equal_torchvisions_full_path(seed, device):
    """Random shapes, flips and resizes (see the module docstring for the rule)."""
    g = torch.Generator().manual_seed(seed)
    for t in range(8):
        n_img = int(torch.randint(1, 3, (1,), generator=g))
        min_size = tuple(int(v) for v in torch.randint(40, 160, (3,), generator=g))
        max_size = int(torch.randint(160, 300, (1,), generator=g))
        fixed = (int(torch.randint(30, 90, (1,), generator=g)), int(torch.randint(30, 90, (1,), generator=g))) \
            if t % 4 == 3 else None
        kw = dict(min_size=min_size, max_size=max_size, image_mean=[0.485, 0.456, 0.406],
                  image_std=[0.229, 0.224, 0.225], fixed_size=fixed)
        tv, ours = _tv_transform(True, min_size, max_size, fixed), ImageTransform(**kw).train()
        images, dense_targets, packed_targets = [], [], []
        for _ in range(n_img):
            h, w = (int(v) for v in torch.randint(20, 130, (2,), generator=g))
            k = int(torch.randint(0, 9, (1,), generator=g))
            image, masks = torch.rand(3, h, w, generator=g), random_masks(g, k, h, w)
            d = {"boxes": tight_boxes(masks), "labels": torch.ones(k, dtype=torch.int64), "masks": masks}
            p = dict(d, masks=PackedMasks.from_dense(masks))
            if bool(torch.rand(1, generator=g) < 0.5):
                image, d = hflip(image, d)
                _, p = hflip(image, p)
            images.append(image)
            dense_targets.append(d)
            packed_targets.append(p)
        torch.manual_seed(seed + t)
        tv_list, tv_t = tv(images, [dict(d) for d in dense_targets])
        torch.manual_seed(seed + t)
        our_list, our_t = ours(images, packed_targets)
        assert our_list.image_sizes == tv_list.image_sizes
        proposals, matched = [], []
        for (h, w), a, b in zip(tv_list.image_sizes, tv_t, our_t):
            assert isinstance(b["masks"], PackedMasks) and b["masks"].out_size == (h, w)
            assert torch.equal(b["masks"].to_dense(), a["masks"])  # torchvision's resized masks, bit for bit
            assert torch.equal(b["boxes"], a["boxes"])
            k = a["masks"].shape[0]
            n = int(torch.randint(0, 12, (1,), generator=g)) if k else 0
            proposals.append(torch.cat([random_boxes(g, n, h, w), a["boxes"]]).to(device))
            matched.append(torch.cat([torch.randint(0, max(k, 1), (n,), generator=g),
                                      torch.arange(k)]).to(device))
        m = 28
        data, inst = PackedMasks.cat([b["masks"] for b in our_t])
        first = torch.tensor([0] + [len(b["masks"]) for b in our_t][:-1]).cumsum(0)
        index = torch.cat([mi + int(f) for mi, f in zip(matched, first.tolist())]).to(device)
        got = packed_mask_targets(data.to(device), inst.to(device), torch.cat(proposals), index, m)
        full = [a["masks"].to(device) for a in tv_t]
        assert torch.equal(got, mask_targets(full, proposals, matched, m))
        tv_targets = torch.cat([project_masks_on_boxes(fm, p, mi, m) for fm, p, mi in zip(full, proposals, matched)])
        torch.testing.assert_close(got, tv_targets, rtol=0, atol=1e-6)
        # maskrcnn_loss: the packed call and the dense one, one loss
        logits = torch.randn(got.shape[0], 2, m, m, generator=g).to(device)
        labels = [torch.ones(len(b["masks"]), dtype=torch.int64, device=device) for b in our_t]
        lp = maskrcnn_loss(logits, proposals, [b["masks"].to(device) for b in our_t], labels, matched, mask_targets,
                           packed_mask_targets)
        ld = maskrcnn_loss(logits, proposals, full, labels, matched, mask_targets)
        assert torch.equal(lp, ld)


def test_mixed_dense_and_packed_images(seed):
    """A batch whose images mix the two forms (the transform packs only where smaller): one
    packed call, the targets of the dense path."""
    g = torch.Generator().manual_seed(seed)
    dense = [random_masks(g, 4, 30, 40), random_masks(g, 3, 50, 20)]
    proposals = [random_boxes(g, 6, 30, 40), random_boxes(g, 5, 50, 20)]
    matched = [torch.randint(0, 4, (6,), generator=g), torch.randint(0, 3, (5,), generator=g)]
    labels = [torch.ones(4, dtype=torch.int64), torch.ones(3, dtype=torch.int64)]
    logits = torch.randn(11, 2, 14, 14, generator=g)
    want = maskrcnn_loss(logits, proposals, dense, labels, matched, mask_targets)
    mixed = [dense[0], PackedMasks.from_dense(dense[1])]
    assert torch.equal(maskrcnn_loss(logits, proposals, mixed, labels, matched, mask_targets, packed_mask_targets),
                       want)
    assert torch.equal(maskrcnn_loss(logits, proposals, mixed, labels, matched, mask_targets), want)  # the op


def test_transform_packs_dense_masks_where_smaller(seed):
    """A dense uint8 target becomes a PackedMasks when that is smaller (before any float copy),
    with torchvision's resized masks; where packing would not be smaller it stays dense."""
    g = torch.Generator().manual_seed(seed)
    ours = ImageTransform(min_size=96, max_size=200, image_mean=[0.5] * 3, image_std=[0.25] * 3).eval()
    tv = _tv_transform(False, 96, 200)
    small = torch.zeros(3, 70, 90, dtype=torch.uint8)
    small[0, 3:9, 4:20] = 1
    small[1, 40:70, 80:90] = 1
    full = torch.ones(1, 70, 90, dtype=torch.uint8)
    image = torch.rand(3, 70, 90, generator=g)
    for masks, packed in ((small, True), (full, False), (small.bool(), True)):
        t = {"boxes": tight_boxes(masks), "labels": torch.ones(masks.shape[0], dtype=torch.int64), "masks": masks}
        _, (a,) = tv([image], [dict(t)])
        _, (b,) = ours([image], [dict(t)])
        assert isinstance(b["masks"], PackedMasks) == packed
        dense = b["masks"].to_dense() if packed else b["masks"]
        assert torch.equal(dense, a["masks"])


def _small_model():
    from maskrcnn_fast.models.builders import maskrcnn_resnet_fpn

    torch.manual_seed(0)
    return maskrcnn_resnet_fpn(18, num_classes=4, min_size=96, max_size=128, rpn_pre_nms_top_n_train=200,
                               rpn_post_nms_top_n_train=100, box_batch_size_per_image=32).train()


def test_training_step_packed_equals_dense(seed):
    """The same model, weights, RNG and items: packed targets (the CLI's) and dense ones
    (torchvision's format) give identical losses; torchvision's model agrees within rounding."""
    from maskrcnn_fast.data import SyntheticShapes

    kw = dict(image_size=(90, 110), min_shapes=3, max_shapes=12, size_range=(0.05, 0.2), seed=seed)
    dense_items = [SyntheticShapes(2, **kw)[i] for i in range(2)]
    packed_items = [SyntheticShapes(2, mask_format="packed", **kw)[i] for i in range(2)]
    model = _small_model()
    losses = []
    for items in (dense_items, packed_items):
        torch.manual_seed(seed)
        losses.append(model([im for im, _ in items], [t for _, t in items]))
    assert list(losses[0]) == list(losses[1])
    for k in losses[0]:
        assert torch.equal(losses[0][k], losses[1][k]), k
    assert losses[1]["loss_mask"] > 0


def test_trainer_moves_packed_targets_and_trains_as_dense():
    """The trainer (a DataLoader worker passing the items, the device move) on packed targets:
    the same loss history as on the dense ones."""
    from maskrcnn_fast.data import SyntheticShapes
    from maskrcnn_fast.engine import Trainer
    from support.models import tiny_model

    hist = []
    for fmt in ("dense", "packed"):
        torch.manual_seed(0)
        data = SyntheticShapes(4, image_size=64, min_shapes=2, max_shapes=5, seed=3, mask_format=fmt)
        hist.append(Trainer(tiny_model(), data, iterations=2, workers=1, lr=0.01).fit())
    assert [r["loss"] for r in hist[0]] == [r["loss"] for r in hist[1]]
    assert all(math.isfinite(r["loss_mask"]) and r["loss_mask"] > 0 for r in hist[1])


# ---- memory: never K x H x W ---------------------------------------------------------------------


class _AllocationProbe(TorchDispatchMode):
    """Records the bytes of every tensor an op returns (the largest, and its op)."""

    def __init__(self):
        super().__init__()
        self.largest, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (list, tuple)) else (out,):
            # a view or an in-place result shares an input's storage: not an allocation
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                n = t.untyped_storage().nbytes()
                if n > self.largest:
                    self.largest, self.op = n, (str(func), tuple(t.shape))
        return out


def test_packed_path_never_allocates_k_x_h_x_w(seed):
    """A training step from a dense synthetic scene (K >= 2,000 objects, 256 x 256) with packed
    targets: the data set item (numpy, traced) and every tensor the model makes (dispatch probe)
    stay under a tenth of the K x H x W bytes the full-size masks would take, and the step
    trains the masks (a finite, positive mask loss)."""
    import tracemalloc

    from maskrcnn_fast.data import SyntheticShapes

    h = w = 256
    ds = SyntheticShapes(1, image_size=h, min_shapes=3000, max_shapes=3000, size_range=(0.008, 0.02), seed=seed,
                         mask_format="packed")
    tracemalloc.start()
    try:
        image, target = ds[0]
        _, data_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    k = len(target["masks"])
    assert k >= 2000  # the shapes that found room
    full = k * h * w
    assert data_peak < full / 10, (data_peak, full)
    assert target["masks"].nbytes < full / 100
    from maskrcnn_fast.models.builders import maskrcnn_resnet_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet_fpn(18, num_classes=4, min_size=256, max_size=256, rpn_pre_nms_top_n_train=300,
                                rpn_post_nms_top_n_train=200, box_batch_size_per_image=32).train()
    torch.manual_seed(seed)
    with _AllocationProbe() as probe:
        losses = model([image], [target])
    assert probe.largest < full / 10, (probe.largest, probe.op, full)
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    assert math.prod(target["masks"].shape) == full
    # the probe sees what it rules out: torchvision's resize of 200 of these masks held dense
    few = target["masks"][:200].to_dense()
    with _AllocationProbe() as probe:
        _tv_transform(True, 256, 256)([image], [{"boxes": target["boxes"][:200], "masks": few}])
    assert probe.largest >= few.numel() * 4  # the float32 copy
