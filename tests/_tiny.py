"""A tiny detection data set and model for the engine and CLI tests (seconds on a CPU)."""
import torch

from maskrcnn_fast.models import maskrcnn_resnet_fpn

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
    from maskrcnn_fast.cli import build_model

    return build_model(tiny_model_args(num_classes))


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
