"""ROIAlign (Mask R-CNN, He et al. 2017): torchvision.ops.roi_align's signature and results on
torch.ops.maskrcnn_fast.roi_align, with its fake kernel and autograd."""
from typing import List, Tuple, Union

import torch
import torch.fx
from torch import Tensor, nn
from torch.jit.annotations import BroadcastingList2

__all__ = ["roi_align", "RoIAlign"]


def _is_channels_last(t: Tensor) -> bool:
    # Same rule as roi_align_channels_last() in csrc/common/roi_align_checks.h: the kernels work
    # (and return) channels-last only for a tensor stored that way, else NCHW.
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _format(t: Tensor):
    return torch.channels_last if _is_channels_last(t) else torch.contiguous_format


@torch.library.register_fake("maskrcnn_fast::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(input.dim() == 4, lambda: f"input must be Tensor[N, C, H, W], got {tuple(input.shape)}")
    torch._check(
        rois.dim() == 2 and rois.size(1) == 5, lambda: f"rois must be Tensor[K, 5], got {tuple(rois.shape)}"
    )
    torch._check(
        input.dtype == rois.dtype,
        lambda: f"input and rois must have the same dtype, got {input.dtype} and {rois.dtype}",
    )
    return torch.empty(
        (rois.size(0), input.size(1), pooled_height, pooled_width),
        dtype=input.dtype,
        device=input.device,
        memory_format=_format(input),
    )


@torch.library.register_fake("maskrcnn_fast::_roi_align_backward")
def _roi_align_backward_fake(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
    sampling_ratio, aligned,
):
    torch._check(
        grad.dtype == rois.dtype,
        lambda: f"grad and rois must have the same dtype, got {grad.dtype} and {rois.dtype}",
    )
    return torch.empty(
        (batch_size, channels, height, width),
        dtype=grad.dtype,
        device=grad.device,
        memory_format=_format(grad),
    )


def _setup_forward(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.input_shape = input.shape
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _backward_forward(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, sampling_ratio, aligned = ctx.args
    n, c, h, w = ctx.input_shape
    grad_input = torch.ops.maskrcnn_fast._roi_align_backward(
        grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned
    )
    return grad_input, None, None, None, None, None, None


def _setup_backward(ctx, inputs, output):
    grad, rois, spatial_scale, ph, pw, _n, _c, _h, _w, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, ph, pw, sampling_ratio, aligned)


def _backward_backward(ctx, grad_grad_input):
    # The backward is linear in grad and its adjoint is roi_align itself.
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, sampling_ratio, aligned = ctx.args
    gg = torch.ops.maskrcnn_fast.roi_align(grad_grad_input, rois, spatial_scale, ph, pw, sampling_ratio, aligned)
    return (gg,) + (None,) * 10


torch.library.register_autograd("maskrcnn_fast::roi_align", _backward_forward, setup_context=_setup_forward)
torch.library.register_autograd(
    "maskrcnn_fast::_roi_align_backward", _backward_backward, setup_context=_setup_backward
)


def _pair(output_size) -> Tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    if isinstance(output_size, (list, tuple)) and len(output_size) == 2:
        return output_size[0], output_size[1]
    if isinstance(output_size, (list, tuple)) and len(output_size) == 1:
        return output_size[0], output_size[0]
    raise ValueError(f"output_size must be an int or a pair of ints, got {output_size!r}")


def _list_to_rois(boxes: List[Tensor]) -> Tensor:
    """One Tensor[L_i, 4] per image -> Tensor[sum L_i, 5] (image index, x1, y1, x2, y2)."""
    if len(boxes) == 0:
        raise ValueError("boxes must be Tensor[K, 5] or a non-empty list of Tensor[L, 4]")
    ids: List[Tensor] = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.size(1) != 4:
            raise ValueError(f"boxes[{i}] must be Tensor[L, 4], got shape {list(b.shape)}")
        ids.append(torch.full_like(b[:, :1], i))
    return torch.cat([torch.cat(ids, dim=0), torch.cat(boxes, dim=0)], dim=1)


def _boxes_to_rois(boxes: Union[Tensor, List[Tensor]]) -> Tensor:
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.size(1) != 5:
            raise ValueError(
                f"boxes must be Tensor[K, 5] or a list of Tensor[L, 4], got shape {list(boxes.shape)}"
            )
        return boxes
    if not torch.jit.is_scripting():
        if not isinstance(boxes, (list, tuple)):
            raise ValueError("boxes must be Tensor[K, 5] or a non-empty list of Tensor[L, 4]")
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor):
                raise ValueError(f"boxes[{i}] must be Tensor[L, 4], got {type(b).__name__}")
        boxes = list(boxes)
    return _list_to_rois(boxes)


@torch.fx.wrap
def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """ROIAlign with average pooling; same arguments and results as ``torchvision.ops.roi_align``.

    Args:
        input (Tensor[N, C, H, W]): feature maps, float32, float64, float16 or bfloat16 (the
            last two are summed in float32). NCHW or channels_last.
        boxes (Tensor[K, 5] or list of Tensor[L, 4]): ``(batch index, x1, y1, x2, y2)`` in input
            pixels, or one ``(x1, y1, x2, y2)`` tensor per image; same dtype and device as input
            (under ``torch.autocast`` mixed dtypes are cast as torchvision's autocast kernel does:
            float16 / bfloat16 to float32, the result back to input's dtype).
        output_size (int or (int, int)): ``(PH, PW)``, the bins per ROI.
        spatial_scale (float): feature-map pixels per input pixel (1/stride), positive.
        sampling_ratio (int): samples per bin side; ``-1`` or ``0``: adaptive,
            ``ceil(roi size / bins)`` per side, capped at 1024.
        aligned (bool): shift boxes by -0.5 px (pixel centres, detectron2); False is the legacy
            rule that stretches ROIs smaller than a pixel to 1x1.

    Returns:
        Tensor[K, C, PH, PW], channels_last when ``input`` is stored channels_last. A sample more
        than one pixel outside the map contributes 0 (and still counts in the average).

    Invalid ROIs: a box with a NaN or infinite coordinate gives zeros (and no gradient). A batch
    index that is not an integer in ``[0, N)`` raises a RuntimeError on the CPU; on CUDA the
    check would need a host sync, so the kernel instead writes zeros for that ROI and gives it no
    gradient. The gradient flows to ``input`` only; the CPU backward is deterministic, the CUDA
    backward uses atomic adds.

    Quantized ``input`` (quint8, qint8, qint32; CPU): ``boxes`` quantized too (or float), and the
    result is torchvision's ``qroi_align`` bit for bit, quantized with ``input``'s scale and zero
    point. torchvision takes one image only (and ignores the batch index); here a batch of
    several images uses the batch index, which must then dequantize to an integer in [0, N).
    Scriptable with ``torch.jit.script``.
    """
    rois = _boxes_to_rois(boxes)
    if torch.jit.is_scripting():
        ph, pw = output_size[0], output_size[1]  # BroadcastingList2 made an int a pair
    else:
        ph, pw = _pair(output_size)
    return torch.ops.maskrcnn_fast.roi_align(input, rois, spatial_scale, ph, pw, sampling_ratio, aligned)


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`, like ``torchvision.ops.RoIAlign``."""

    def __init__(
        self,
        output_size: BroadcastingList2[int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )
