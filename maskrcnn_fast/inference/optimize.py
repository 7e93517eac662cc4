"""Inference-only rewrites of a model: batch norms folded into their convolutions, and the
memory format the convolutions run fastest in, which our backbone measures on the machine.

:func:`optimize_for_inference` works on a deep copy; the model passed in is never modified.
"""
import copy
from typing import Optional

import torch
from torch import nn

from ..models import BackboneWithFPN
from ..models.batch_norm import bn_affine

__all__ = ["optimize_for_inference", "fold_batch_norms"]


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    w = conv.weight
    conv.weight = nn.Parameter(
        (w.double() * scale.reshape(-1, *([1] * (w.dim() - 1)))).to(w.dtype), requires_grad=False
    )
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(shift)
    conv.bias = nn.Parameter((bias * scale + shift).to(w.dtype), requires_grad=False)


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> int:
    """Folds, IN PLACE, every batch norm that directly follows a Conv2d among its parent's
    children (the conv/bn pairs of torchvision's ResNets: ``conv1, bn1``, ``downsample.0, .1``)
    into that conv, and replaces it by ``nn.Identity``. Only frozen and eval-mode batch norms
    with running statistics are folded. Returns how many were folded."""
    folded = 0
    for parent in list(model.modules()):
        prev_name: Optional[str] = None
        for name, child in list(parent.named_children()):
            prev = getattr(parent, prev_name) if prev_name is not None else None
            prev_name = name
            if not isinstance(prev, nn.Conv2d):
                continue
            affine = bn_affine(child, torch.float64)
            if affine is None or affine[0].numel() != prev.out_channels:
                continue
            _fold_into(prev, affine[0].to(prev.weight.device), affine[1].to(prev.weight.device))
            setattr(parent, name, nn.Identity())
            folded += 1
    return folded


def _channels_last_pays(device: torch.device) -> bool:
    # For a model without our backbone, which cannot time itself: on the 2-core Xeon (AVX-512)
    # ResNet-50 FPN inference at 800x1088 takes ~0.7 s on channels_last activations against
    # ~2.0 s on NCHW ones (oneDNN's NHWC kernels, the 1x1 convolutions most); on CUDA
    # channels_last feeds the tensor cores.
    return device.type in ("cpu", "cuda")


def optimize_for_inference(model: nn.Module, channels_last: Optional[bool] = None) -> nn.Module:
    """A copy of ``model`` for inference: eval mode, no gradients, every frozen / eval-mode
    batch norm folded into the convolution before it (same results up to float rounding), and
    the convolutions' memory format chosen for speed. ``channels_last``: None (default) lets
    our backbone time both formats on its first input of each size on this machine and keep the
    faster (``BackboneWithFPN.channels_last = "auto"``; ``MASKRCNN_FAST_CHANNELS_LAST=0/1``
    skips the timing); a model without our backbone gets channels_last on the CPU and CUDA.
    True / False fixes it: True also stores the weights channels_last. ``model`` and its
    state_dict are left as they are.

    The copy's state_dict lacks the folded batch norms' keys: save the original's.
    """
    opt = copy.deepcopy(model)
    opt.eval()
    for p in opt.parameters():
        p.requires_grad_(False)
    fold_batch_norms(opt)
    p = next(opt.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    backbones = [m for m in opt.modules() if isinstance(m, BackboneWithFPN)]
    if channels_last is None and backbones:
        # The weights stay as they are: a channels_last input makes the convolution
        # channels_last whatever the weight's format, while a channels_last weight would also
        # force it on an NCHW input, overriding the choice
        for m in backbones:
            m.channels_last = "auto"
        return opt
    if channels_last is None:
        channels_last = _channels_last_pays(device)
    for m in opt.modules():
        if channels_last and isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
        if isinstance(m, BackboneWithFPN):
            m.channels_last = bool(channels_last)
    return opt
