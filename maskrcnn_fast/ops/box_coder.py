"""Box coder: torchvision's BoxCoder (R-CNN box parametrisation), one fused kernel per call."""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["BoxCoder", "decode_boxes", "encode_boxes"]

_DEFAULT_XFORM_CLIP = math.log(1000.0 / 16)


def _weights(weights) -> List[float]:
    if isinstance(weights, Tensor):  # torchvision's encode_boxes takes a tensor (host read)
        weights = weights.tolist()
    return [float(w) for w in weights]


def decode_boxes(
    rel_codes: Tensor,
    boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = _DEFAULT_XFORM_CLIP,
    image_size: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """Applies box deltas to reference boxes, optionally clipping to the image, in one kernel.

    Same result as torchvision ``BoxCoder(weights, bbox_xform_clip).decode_single(rel_codes,
    boxes)`` followed, when ``image_size`` is given, by ``clip_boxes_to_image(.., image_size)``.

    Args:
        rel_codes (Tensor[K, 4 * C]): (dx, dy, dw, dh) for each of C classes.
        boxes (Tensor[K, 4]): reference boxes x1, y1, x2, y2 in input pixels; cast to
            rel_codes' dtype first, as torchvision does.
        weights (4 floats): (wx, wy, ww, wh); the deltas are divided by them.
        bbox_xform_clip (float): dw and dh are clamped from above to this before exp.
        image_size ((int, int), optional): (height, width): x clipped to [0, width], y to
            [0, height].

    Returns:
        Tensor[K, 4 * C] of rel_codes' dtype: x1, y1, x2, y2 per class. float32 and float64
        follow torchvision's operation order: bitwise equal but for the rounding of exp (torch's
        vectorised exp is within 1-2 ulp of ours), which can move a coordinate by a few ulp of
        the box's magnitude. Half and bfloat16 are computed in float, rounded once. A NaN
        delta gives NaN coordinates (clipping keeps NaN, as torch.clamp does); +Inf dw/dh is
        clamped to bbox_xform_clip; an infinite dx/dy gives infinite (clipped: 0 or the border)
        coordinates.
    """
    size = None if image_size is None else [image_size[0], image_size[1]]
    return torch.ops.maskrcnn_fast.decode_boxes(
        rel_codes, boxes, _weights(weights), float(bbox_xform_clip), size
    )


def encode_boxes(
    reference_boxes: Tensor, proposals: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """The regression targets that turn ``proposals`` into ``reference_boxes``.

    Same result as torchvision ``BoxCoder(weights).encode_single(reference_boxes, proposals)``.

    Args:
        reference_boxes (Tensor[K, 4]): target boxes x1, y1, x2, y2 (e.g. matched ground truth).
        proposals (Tensor[K, 4]): boxes to encode against (anchors or proposals).
        weights (4 floats or Tensor[4]): (wx, wy, ww, wh), rounded to reference_boxes' dtype.

    Returns:
        Tensor[K, 4] (dx, dy, dw, dh) in the promoted dtype of the two inputs (mixed dtypes are
        cast to it first). dx, dy are bitwise torchvision's; dw, dh up to the rounding of log.
        Degenerate
        (zero-size) proposals give +-Inf or NaN, as in torchvision; NaN inputs give NaN.
    """
    return torch.ops.maskrcnn_fast.encode_boxes(reference_boxes, proposals, _weights(weights))


@torch.library.register_fake("maskrcnn_fast::decode_boxes")
def _decode_boxes_fake(rel_codes, boxes, weights, bbox_xform_clip, image_size=None):
    torch._check(rel_codes.device == boxes.device,
                 lambda: f"rel_codes and boxes must be on the same device, got "
                         f"{rel_codes.device} and {boxes.device}")
    torch._check(rel_codes.dim() == 2, lambda: "rel_codes must be Tensor[K, 4 * C]")
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must be Tensor[K, 4]")
    torch._check(len(weights) == 4, lambda: "weights must hold 4 values (wx, wy, ww, wh)")
    return rel_codes.new_empty(rel_codes.shape)


@torch.library.register_fake("maskrcnn_fast::encode_boxes")
def _encode_boxes_fake(reference_boxes, proposals, weights):
    torch._check(reference_boxes.device == proposals.device,
                 lambda: f"reference_boxes and proposals must be on the same device, got "
                         f"{reference_boxes.device} and {proposals.device}")
    torch._check(reference_boxes.dim() == 2 and reference_boxes.shape[1] == 4,
                 lambda: "reference_boxes must be Tensor[K, 4]")
    torch._check(proposals.dim() == 2 and proposals.shape[1] == 4,
                 lambda: "proposals must be Tensor[K, 4]")
    torch._check(len(weights) == 4, lambda: "weights must hold 4 values (wx, wy, ww, wh)")
    dtype = torch.promote_types(reference_boxes.dtype, proposals.dtype)
    return reference_boxes.new_empty((reference_boxes.shape[0], 4), dtype=dtype)


class BoxCoder:
    """torchvision.models.detection._utils.BoxCoder on fused kernels.

    Args:
        weights (4 floats): (wx, wy, ww, wh).
        bbox_xform_clip (float): upper bound of dw, dh before exp (default log(1000 / 16)).

    decode / decode_single take an optional ``image_size`` (height, width): the decoded boxes
    are then clipped to it in the same kernel (torchvision's clip_boxes_to_image).
    """

    def __init__(
        self, weights: Tuple[float, float, float, float], bbox_xform_clip: float = _DEFAULT_XFORM_CLIP
    ) -> None:
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: List[Tensor], proposals: List[Tensor]) -> Tuple[Tensor, ...]:
        """Per-image targets: tuple of Tensor[K_i, 4] (inputs: lists of Tensor[K_i, 4])."""
        boxes_per_image = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(reference_boxes, dim=0), torch.cat(proposals, dim=0))
        return targets.split(boxes_per_image, 0)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Tensor[K, 4] targets of proposals (Tensor[K, 4]) towards reference_boxes."""
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode(
        self, rel_codes: Tensor, boxes: List[Tensor], image_size: Optional[Tuple[int, int]] = None
    ) -> Tensor:
        """rel_codes (Tensor[sum K_i, 4 * C]) on boxes (list of Tensor[K_i, 4]) ->
        Tensor[sum K_i, C, 4]; all images clipped to the same ``image_size`` if given."""
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(f"boxes must be a list or tuple of Tensor[K_i, 4], got {type(boxes)}")
        if not isinstance(rel_codes, Tensor):
            raise TypeError(f"rel_codes must be a Tensor, got {type(rel_codes)}")
        box_sum = sum(b.size(0) for b in boxes)
        concat_boxes = boxes[0] if len(boxes) == 1 else torch.cat(boxes, dim=0)
        if box_sum > 0:
            rel_codes = rel_codes.reshape(box_sum, -1)
        pred_boxes = self.decode_single(rel_codes, concat_boxes, image_size=image_size)
        if box_sum > 0:
            pred_boxes = pred_boxes.reshape(box_sum, -1, 4)
        return pred_boxes

    def decode_single(
        self, rel_codes: Tensor, boxes: Tensor, image_size: Optional[Tuple[int, int]] = None
    ) -> Tensor:
        """rel_codes (Tensor[K, 4 * C]) on boxes (Tensor[K, 4]) -> Tensor[K, 4 * C]."""
        return decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip, image_size)
