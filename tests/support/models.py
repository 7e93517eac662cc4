"""The models the tests build, by size, and a tiny detection data set.

- ``TINY_KWARGS``, ``tiny_model``, ``TinyShapes``: 64 px, trains in seconds on a CPU (the engine
  and CLI tests); ``save_tiny_checkpoint`` writes one as our checkpoints are.
- ``SMALL``: ResNet-18 FPN on 200-320 px images, 11 classes, every detection kept (the model's
  parity with torchvision, compile, optimize_for_inference).
- ``EXPORT_SMALL``: ``SMALL`` on 120x150 images resized to 128x160, 5 classes, fewer proposals
  and detections (the deployment tests, tests/support/export.py).
"""
import torch

SMALL = dict(
    num_classes=11,
    min_size=200,
    max_size=320,
    box_score_thresh=0.0,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=150,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=150,
    box_batch_size_per_image=64,
    box_detections_per_img=40,
)

EXPORT_SMALL = dict(SMALL, num_classes=5, min_size=128, max_size=160, rpn_pre_nms_top_n_test=200,
                    rpn_post_nms_top_n_test=100, box_detections_per_img=20)

# small enough to train in seconds: fewer anchors sampled, fewer proposals and ROIs
TINY_KWARGS = dict(
    min_size=64, max_size=64,
    rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
    rpn_batch_size_per_image=64, box_batch_size_per_image=32, box_detections_per_img=20,
    anchor_sizes=(8, 16, 32, 64, 128),
)


def tiny_model_args(num_classes: int = 4) -> dict:
    return {"depth": 18, "num_classes": num_classes, "classes": ["__background__", "a", "b", "c"],
            "kwargs": dict(TINY_KWARGS)}


def tiny_model(num_classes: int = 4):
    from maskrcnn_fast.models.builders import build_model

    return build_model(tiny_model_args(num_classes))


def save_tiny_checkpoint(path, args=None, **kwargs):
    """An untrained tiny model (seed 0) saved at ``path`` as our checkpoints are: the weights,
    how to rebuild the model (``kwargs`` override its keyword arguments) and, when given, the
    training run's ``args``. Returns ``str(path)``."""
    torch.manual_seed(0)
    model_args = tiny_model_args()
    model_args["kwargs"].update(kwargs)
    ckpt = {"model": tiny_model().state_dict(), "model_args": model_args}
    if args is not None:
        ckpt["args"] = args
    torch.save(ckpt, path)
    return str(path)


class TinyShapes(torch.utils.data.Dataset):
    """Item i: a 64x64 image with 1-2 filled rectangles of class-specific colours, a pure
    function of i (plus a random brightness jitter drawn from the global torch RNG, to check
    that the trainer seeds every item)."""

    num_classes = 4
    classes = ["__background__", "red", "green", "blue"]

    def __init__(self, n: int = 8, size: int = 64, jitter: bool = True):
        self.n, self.size, self.jitter = n, size, jitter

    def __len__(self):
        return self.n

    def get_height_and_width(self, i):
        return self.size, self.size

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 + i)
        s = self.size
        img = torch.full((3, s, s), 0.5)
        boxes, labels, masks = [], [], []
        for k in range(1 + i % 2):
            w, h = (torch.randint(12, 28, (2,), generator=g)).tolist()
            x1 = int(torch.randint(0, s - w, (1,), generator=g)) if k == 0 else s - w - 1
            y1 = int(torch.randint(0, s - h, (1,), generator=g)) if k == 0 else s - h - 1
            lab = int(torch.randint(1, 4, (1,), generator=g))
            m = torch.zeros(s, s, dtype=torch.uint8)
            m[y1:y1 + h, x1:x1 + w] = 1
            img[:, m.bool()] = 0.1
            img[lab - 1, m.bool()] = 0.9
            boxes.append([x1, y1, x1 + w, y1 + h])
            labels.append(lab)
            masks.append(m)
        masks = torch.stack(masks)
        # later shapes cover earlier ones
        for a in range(len(masks) - 1):
            masks[a] &= ~masks[a + 1:].amax(0).bool()
        if self.jitter:
            img = (img * (0.9 + 0.2 * torch.rand(()))).clamp(0, 1)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": masks,
            "image_id": i,
            "area": masks.flatten(1).sum(1).float(),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        }
        return img, target


def randomize_batch_norms(model, generator):
    """Random statistics and affine parameters in every BatchNorm2d and FrozenBatchNorm2d of
    ``model`` (a fresh model's are the identity: folding them would prove nothing)."""
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    g = generator
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
