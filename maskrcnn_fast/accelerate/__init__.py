"""Our kernels behind torchvision's own registered ops, for every caller, and our fused ops behind
torchvision's Python-level detection paths (issue 20).

    import maskrcnn_fast
    maskrcnn_fast.accelerate_torchvision()        # torchvision.ops.nms / roi_align now run ours
    maskrcnn_fast.accelerate.restore_torchvision()  # torchvision's kernels again

    with maskrcnn_fast.accelerate.torchvision_accelerated():
        ...

The CPU (and, with our CUDA kernels and a GPU, CUDA) kernels of ``torchvision::nms``,
``torchvision::roi_align`` and ``torchvision::_roi_align_backward`` are replaced in the
dispatcher, so names bound before the call, ``torch.ops.torchvision.*`` and TorchScript all
reach them; torchvision's autograd, autocast, Meta and quantized kernels stay. Calls our ops
cannot take as torchvision does run torchvision's own kernel (see docs/accelerate.md).

The same call replaces torchvision's detection code (batched_nms, box_iou, AnchorGenerator,
MultiScaleRoIAlign, the mask targets; with ``exact=False`` also the box decoding, the RPN's
proposals, the box head's postprocess and mask pasting) for models built before or after it
(``torchvision_models``).

The room sits above ops and models and below cli; it imports only public names below it.
"""
from .torchvision_ops import (
    accelerate_torchvision,
    is_accelerated,
    kernel_calls,
    restore_torchvision,
    torchvision_accelerated,
)

__all__ = [
    "accelerate_torchvision",
    "restore_torchvision",
    "torchvision_accelerated",
    "is_accelerated",
    "kernel_calls",
]
