"""Pure-PyTorch multi-scale (FPN) RoIAlign: the oracle of multilevel_roi_align's tests (in
float64, values and gradients through autograd) and the "torch" path of its benchmarks.

The level of every ROI is computed in one vectorised pass (torchvision's LevelMapper formula and
roundings); then each level's ROIs go through the vectorised reference ``roi_align`` and are put
back in input order.
"""
import torch
from torch import Tensor, nn

from .roi_align import roi_align as _roi_align

__all__ = ["MultiScaleRoIAlign", "fpn_levels", "multilevel_roi_align"]


def fpn_levels(
    boxes: Tensor,
    k_min: int,
    k_max: int,
    canonical_scale: int = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """FPN level of each box relative to k_min (FPN paper, eq. 1), computed as torchvision's
    LevelMapper: in float64 for float64 boxes, else in float32 (its box_area upcasts).

    Args:
        boxes (Tensor[K, 4]): x1, y1, x2, y2.

    Returns:
        LongTensor[K]: ``clamp(floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps),
        k_min, k_max) - k_min``; -1 where that is NaN (a box of negative area).
    """
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    s = torch.sqrt(area)
    lvl = torch.floor(canonical_level + torch.log2(s / canonical_scale)
                      + torch.tensor(eps, dtype=s.dtype, device=s.device))
    lvl = torch.clamp(lvl, min=k_min, max=k_max)
    nan = torch.isnan(lvl)
    lvl = torch.where(nan, torch.zeros_like(lvl), lvl).to(torch.int64) - k_min
    return torch.where(nan, torch.full_like(lvl, -1), lvl)


def _level_of_scale(scale: float) -> int:
    return int(-torch.log2(torch.tensor(scale, dtype=torch.float32)).item())


def multilevel_roi_align(
    features,
    boxes,
    output_size,
    scales,
    sampling_ratio: int = -1,
    aligned: bool = False,
    canonical_scale: int = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """Same arguments and results as ``maskrcnn_fast.ops.multilevel_roi_align``.

    Args:
        features (List[Tensor[N, C, H_l, W_l]]): the pyramid, finest first.
        boxes (Tensor[K, 5] or List[Tensor[L_i, 4]]): (batch index, x1, y1, x2, y2) or one
            (x1, y1, x2, y2) tensor per image, in input pixels.
        output_size (int or (int, int)), scales (List[float]), sampling_ratio (int),
        aligned (bool), canonical_scale, canonical_level (int), eps (float): as the op.

    Returns:
        Tensor[K, C, PH, PW]; zeros for ROIs with no level (see ``fpn_levels``), a non-finite
        box, or a batch index that is not an integer in [0, N).
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    ph, pw = int(output_size[0]), int(output_size[1])
    f0 = features[0]
    if isinstance(boxes, Tensor):
        rois = boxes
    elif len(boxes) == 0:
        rois = f0.new_empty((0, 5))
    else:
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1)
                          for i, b in enumerate(boxes)], 0)
    rois = rois.detach()
    k = rois.size(0)
    if len(features) == 1:
        levels = torch.zeros(k, dtype=torch.int64, device=rois.device)
    else:
        levels = fpn_levels(rois[:, 1:], _level_of_scale(scales[0]), _level_of_scale(scales[-1]),
                            canonical_scale, canonical_level, eps)
    out = f0.new_zeros((k, f0.size(1), ph, pw))
    if torch.is_grad_enabled() and any(f.requires_grad for f in features):
        # Every map takes part in the graph (zero gradient where no ROI), as in the fused op.
        out = out + sum(0 * f.sum() for f in features)
    for lvl, (feat, scale) in enumerate(zip(features, scales)):
        idx = torch.nonzero(levels == lvl).flatten()
        if idx.numel() == 0:
            continue
        pooled = _roi_align(feat, rois[idx], (ph, pw), scale, sampling_ratio, aligned)
        out.index_copy_(0, idx, pooled.to(out.dtype))
    return out


class MultiScaleRoIAlign(nn.Module):
    """Reference of :class:`maskrcnn_fast.ops.MultiScaleRoIAlign`: ``(features dict, boxes list,
    image_shapes) -> Tensor[K, C, S, S]``. The scales are torchvision's:
    2 ** round(log2(H_l / largest image height)), inferred on the first call."""

    def __init__(self, featmap_names, output_size, sampling_ratio, *, canonical_scale=224, canonical_level=4):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level
        self.scales = None

    def forward(self, x, boxes, image_shapes):
        feats = [v for k, v in x.items() if k in self.featmap_names]
        if self.scales is None:
            max_h = max(int(s[0]) for s in image_shapes)
            # in float32, as torchvision rounds it
            self.scales = [2.0 ** float(torch.tensor(f.shape[-2] / max_h).log2().round()) for f in feats]
        return multilevel_roi_align(
            feats, boxes, self.output_size, self.scales, self.sampling_ratio, False,
            self.canonical_scale, self.canonical_level,
        )
