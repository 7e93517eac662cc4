"""Multi-scale (FPN) RoIAlign in one kernel launch: ``torchvision.ops.MultiScaleRoIAlign``'s
results, with the FPN level of every ROI chosen inside the kernel instead of a Python loop of
``where``/``roi_align``/index-put per level.
"""
import math
import struct
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ["multilevel_roi_align", "MultiScaleRoIAlign"]

_MAX_LEVELS = 8


def _pair(output_size) -> Tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    output_size = tuple(output_size)
    if len(output_size) == 1:
        return int(output_size[0]), int(output_size[0])
    if len(output_size) != 2:
        raise ValueError(f"output_size must be an int or (height, width), got {output_size}")
    return int(output_size[0]), int(output_size[1])


def _to_rois(boxes: Union[Tensor, Sequence[Tensor]], like: Tensor) -> Tensor:
    """Tensor[K, 5] (batch index, x1, y1, x2, y2) from a Tensor[K, 5] or a list of Tensor[L, 4]."""
    if isinstance(boxes, Tensor):
        return boxes
    if len(boxes) == 0:
        return like.new_empty((0, 5))
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.dim() != 2 or b.size(1) != 4:
            shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"boxes[{i}] must be Tensor[L, 4], got {shape}")
    ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(ids, 0), torch.cat(list(boxes), 0)], 1)


def multilevel_roi_align(
    features: List[Tensor],
    boxes: Union[Tensor, List[Tensor]],
    output_size: Union[int, Tuple[int, int], List[int]],
    scales: List[float],
    sampling_ratio: int = -1,
    aligned: bool = False,
    canonical_scale: int = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """RoIAlign over a feature pyramid, each ROI pooled from its FPN level (FPN paper, eq. 1).

    The level of a box is ``floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)``
    clamped to ``[k_min, k_max]``, where ``k = -log2(scale)`` of the first and last map; it is
    computed in the boxes' dtype with torchvision's roundings, so every ROI goes to the level
    torchvision's ``MultiScaleRoIAlign`` gives it on the same device. The devices differ as
    torch's do: the CPU divides by ``canonical_scale``, CUDA multiplies by its reciprocal (torch's
    CUDA division by a scalar), and each takes ``log2`` from its own math library; so a box within
    about 1e-6 (relative) of a level boundary, some 3 random boxes in 10^8, can go to another level
    on CUDA than on the CPU, in torchvision as here. With a single map every ROI is pooled from it.

    Args:
        features (List[Tensor[N, C, H_l, W_l]]): 1 to 8 maps, finest first, same dtype, batch size
            and channels; any strides (NCHW and channels_last are read in place).
        boxes (Tensor[K, 5] or List[Tensor[L_i, 4]]): (batch index, x1, y1, x2, y2), or one
            (x1, y1, x2, y2) tensor per image; in input-image pixels. The features' dtype, or
            float32 with float16/bfloat16 features (mixed precision: the result is then
            torchvision's under autocast, float32 arithmetic rounded to the features' dtype).
        output_size (int or (int, int)): (PH, PW) bins.
        scales (List[float]): feature pixels per input pixel of each map (e.g. 1/4 .. 1/32).
        sampling_ratio (int): samples per bin side; <= 0: ceil(bin size) (adaptive).
        aligned (bool): shift boxes by -0.5 px (pixel centres); torchvision's pooler uses False.
        canonical_scale, canonical_level (int), eps (float): the level mapping's constants.

    Returns:
        Tensor[K, C, PH, PW] of the features' dtype, in the order of the boxes. Differentiable
        with respect to ``features`` (on the CPU with a deterministic backward).

    ROIs that pool nothing give zeros: a non-finite coordinate (NaN/Inf); a box of negative
    area (x2 < x1 xor y2 < y1) when there are several maps (its level is NaN, as in
    torchvision); a level with no map (scales that are not consecutive powers of 2). A batch
    index that is not an integer in [0, N) raises on the CPU and gives zeros on CUDA (checked
    inside the kernel, no host sync).
    """
    ph, pw = _pair(output_size)
    if not isinstance(features, (list, tuple)) or len(features) == 0:
        raise ValueError("features must be a non-empty list of Tensor[N, C, H, W]")
    rois = _to_rois(boxes, features[0])
    return torch.ops.maskrcnn_fast.multilevel_roi_align(
        list(features), rois, [float(s) for s in scales], ph, pw, int(sampling_ratio),
        bool(aligned), int(canonical_scale), int(canonical_level), float(eps),
    )


def _infer_scales(features: List[Tensor], image_shapes: List[Tuple[int, int]]) -> List[float]:
    """torchvision's scale inference: 2 ** round(log2(H_feature / max image height)), in float32."""
    if not image_shapes:
        raise ValueError("image_shapes must not be empty")
    max_h = max(int(s[0]) for s in image_shapes)
    scales = []
    for f in features:
        # Plain Python, no tensor: no graph break under torch.compile. The ratio is rounded
        # to float32 first as torchvision's torch.tensor(approx) does; round() is half-to-even
        # like torch.round.
        approx = struct.unpack("f", struct.pack("f", float(f.shape[-2]) / float(max_h)))[0]
        scales.append(2.0 ** round(math.log2(approx)))
    return scales


class MultiScaleRoIAlign(nn.Module):
    """Drop-in for ``torchvision.ops.MultiScaleRoIAlign``: same arguments, same results.

    Args:
        featmap_names (List[str]): the keys of the feature maps to pool from.
        output_size (int or (int, int)): (PH, PW) bins.
        sampling_ratio (int): samples per bin side; <= 0: adaptive.
        canonical_scale (int), canonical_level (int): FPN eq. 1's 224 and k0 = 4.

    The scales are inferred on the first call from the maps' heights and the largest image
    height (powers of 2), then kept in ``self.scales``, as torchvision does.
    """

    __annotations__ = {"scales": Optional[List[float]]}

    def __init__(
        self,
        featmap_names: List[str],
        output_size: Union[int, Tuple[int], List[int]],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        self.featmap_names = featmap_names
        self.sampling_ratio = sampling_ratio
        self.output_size = _pair(output_size)
        self.scales: Optional[List[float]] = None
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def forward(
        self,
        x: Dict[str, Tensor],
        boxes: List[Tensor],
        image_shapes: List[Tuple[int, int]],
    ) -> Tensor:
        """
        Args:
            x (Dict[str, Tensor[N, C, H_l, W_l]]): feature maps; those named in featmap_names
                are used, in the dict's order.
            boxes (List[Tensor[L_i, 4]]): x1, y1, x2, y2 in input-image pixels, one tensor per
                image.
            image_shapes (List[Tuple[int, int]]): (height, width) of each image before the
                backbone.

        Returns:
            Tensor[sum L_i, C, PH, PW].
        """
        x_filtered = [v for k, v in x.items() if k in self.featmap_names]
        if self.scales is None:
            self.scales = _infer_scales(x_filtered, image_shapes)
        return multilevel_roi_align(
            x_filtered, boxes, self.output_size, self.scales, self.sampling_ratio, False,
            self.canonical_scale, self.canonical_level,
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})"
        )


@torch.library.register_fake("maskrcnn_fast::multilevel_roi_align")
def _multilevel_roi_align_fake(features, rois, scales, pooled_height, pooled_width,
                               sampling_ratio, aligned, canonical_scale, canonical_level, eps):
    torch._check(1 <= len(features) <= _MAX_LEVELS,
                 lambda: f"features must hold 1 to {_MAX_LEVELS} feature maps")
    torch._check(len(scales) == len(features), lambda: "scales must have one entry per feature map")
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: "rois must be Tensor[K, 5]")
    f0 = features[0]
    for i, f in enumerate(features):
        torch._check(f.dim() == 4, lambda: f"features[{i}] must be Tensor[N, C, H, W]")
        torch._check(f.dtype == f0.dtype, lambda: "features must all have the same dtype")
        torch._check(
            rois.dtype == f.dtype
            or (rois.dtype == torch.float32 and f.dtype in (torch.float16, torch.bfloat16)),
            lambda: f"features[{i}] and rois must have the same dtype (or float32 rois with "
            "float16/bfloat16 features)")
        torch._check(f.device == rois.device,
                     lambda: f"features[{i}] and rois must be on the same device")
        torch._check(f.size(0) == f0.size(0) and f.size(1) == f0.size(1),
                     lambda: "features must share batch size and channel count")
    return f0.new_empty((rois.size(0), f0.size(1), pooled_height, pooled_width))


@torch.library.register_fake("maskrcnn_fast::_multilevel_roi_align_backward")
def _multilevel_roi_align_backward_fake(grad, rois, scales, pooled_height, pooled_width,
                                        sampling_ratio, aligned, canonical_scale,
                                        canonical_level, eps, batch_size, channels, heights,
                                        widths):
    torch._check(len(heights) == len(widths),
                 lambda: "heights and widths must have the same length")
    return [grad.new_empty((batch_size, channels, h, w)) for h, w in zip(heights, widths)]


def _setup_context(ctx, inputs, output):
    features, rois, scales, ph, pw, sampling_ratio, aligned, cscale, clevel, eps = inputs
    ctx.save_for_backward(rois)
    ctx.args = (scales, ph, pw, sampling_ratio, aligned, cscale, clevel, eps)
    ctx.sizes = (
        features[0].shape[0],
        features[0].shape[1],
        [f.shape[2] for f in features],
        [f.shape[3] for f in features],
    )


def _backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    n, c, heights, widths = ctx.sizes
    grads = torch.ops.maskrcnn_fast._multilevel_roi_align_backward(
        grad, rois, *ctx.args, n, c, heights, widths
    )
    return list(grads), None, None, None, None, None, None, None, None, None


torch.library.register_autograd(
    "maskrcnn_fast::multilevel_roi_align", _backward, setup_context=_setup_context
)
