"""Our kernels as the CPU / CUDA kernels of torchvision's registered ops.

One ``torch.library.Library("torchvision", "IMPL")`` holds the registrations: its lifetime is
the acceleration, and destroying it makes the dispatcher's previous kernels (torchvision's own)
active again. Only the backend keys are replaced, so torchvision's Autograd kernel (which calls
``torchvision::_roi_align_backward`` through the dispatcher, reaching ours), its Autocast
kernels (casts, then redispatch to the backend), its Meta kernels and its quantized kernels
(QuantizedCPU) are kept.

Each replacement is an adapter with torchvision's schema (the same as ours: compare
``torch.ops.torchvision.roi_align.default._schema`` with maskrcnn_fast/_ext/schemas.py). It
runs our op when the call lies in our op's domain and torchvision's kernel accepts the dtype on
that device; otherwise it calls torchvision's original kernel (``torch.library.get_kernel``,
taken before the override), so its result or its error is unchanged. Outputs are contiguous,
as torchvision's are (our roi_align returns channels_last for channels_last input).
"""
import contextlib
import math
from collections import Counter

import torch

from . import torchvision_models

__all__ = [
    "accelerate_torchvision",
    "restore_torchvision",
    "torchvision_accelerated",
    "is_accelerated",
    "kernel_calls",
]

OPS = ("nms", "roi_align", "_roi_align_backward")

_INT32_MAX = 2**31 - 1
_MAX_NMS_BOXES = 1 << 30  # csrc/common/nms_checks.h
_MAX_BINS = 1 << 26  # csrc/common/roi_align_checks.h: pooled_height * pooled_width
_MAX_SAMPLING_RATIO = 1024  # csrc/common/roi_align_math.h: kMaxAdaptiveGrid
# The dtypes each adapter gives our kernel, where torchvision's kernel takes them too. Our nms
# compares half and bfloat16 boxes in float32, as torchvision's CUDA nms does: same answers. Our
# roi_align sums half and bfloat16 in float32 and rounds once, torchvision's kernels sum in the
# input's dtype: the answers would change (ours are closer to float32), so those calls stay
# torchvision's. Under autocast torchvision casts them to float32 first, which reaches ours.
_OUR_DTYPES = {
    "nms": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "roi_align": (torch.float32, torch.float64),
    "_roi_align_backward": (torch.float32, torch.float64),
}

_library = None  # the torch.library.Library of the acceleration; None: torchvision's kernels
_keys = ()
_originals = {}  # (op, dispatch key) -> torchvision's kernel (a SafeKernelFunction)
_accepted = {}  # (op, device type, dtype) -> whether torchvision's kernel takes that dtype there
_calls = Counter()  # op -> calls our kernels took; "op:torchvision" -> calls handed back


def kernel_calls():
    """Counts since the process started (never reset): ``{"nms": n, ...}`` for the calls our
    kernels took, ``{"nms:torchvision": m, ...}`` for the calls handed to torchvision's kernels
    while accelerated, and the same for the Python-level detection paths (``"batched_nms"``,
    ``"box_iou"``, ``"grid_anchors"``, ``"multiscale_roi_align"``, ``"mask_targets"``, ...).
    Differences between two readings say which kernel ran."""
    return {**_calls, **torchvision_models.model_calls()}


def is_accelerated() -> bool:
    """True between :func:`accelerate_torchvision` and :func:`restore_torchvision`."""
    return _library is not None


# ---- which calls our ops take ------------------------------------------------------------------


def _nms_takes(dets, scores, iou_threshold):
    return (
        dets.dim() == 2 and dets.size(1) == 4 and scores.dim() == 1
        and dets.size(0) == scores.size(0) and dets.size(0) <= _MAX_NMS_BOXES
        and dets.dtype == scores.dtype and dets.device == scores.device
        and iou_threshold >= 0  # False for NaN; torchvision takes a negative threshold, ours not
    )


def _params_take(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    return (
        rois.dim() == 2 and rois.size(1) == 5
        and 0 < pooled_height <= _INT32_MAX and 0 < pooled_width <= _INT32_MAX
        and pooled_height * pooled_width <= _MAX_BINS
        and math.isfinite(spatial_scale) and spatial_scale > 0
        and -1 <= sampling_ratio <= _MAX_SAMPLING_RATIO
    )


def _roi_align_takes(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return (
        input.dim() == 4 and input.dtype == rois.dtype and input.device == rois.device
        and input.size(2) <= _INT32_MAX and input.size(3) <= _INT32_MAX
        and _params_take(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio)
    )


def _backward_takes(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                    height, width, sampling_ratio, aligned):
    return (
        grad.dim() == 4 and grad.dtype == rois.dtype and grad.device == rois.device
        and _params_take(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio)
        and batch_size >= 0 and channels >= 0 and 0 <= height <= _INT32_MAX and 0 <= width <= _INT32_MAX
        and tuple(grad.shape) == (rois.size(0), channels, pooled_height, pooled_width)
        # torchvision's CUDA backward raises under torch.use_deterministic_algorithms (atomic
        # adds); ours would not: that call stays torchvision's.
        and not (grad.is_cuda and torch.are_deterministic_algorithms_enabled())
    )


def _probe_args(op, dtype, device):
    """The smallest valid call of ``op`` in ``dtype`` on ``device``."""
    def t(*shape):
        return torch.zeros(*shape, dtype=dtype, device=device)

    if op == "nms":
        return (t(1, 4), t(1), 0.5)
    if op == "roi_align":
        return (t(1, 1, 1, 1), t(1, 5), 1.0, 1, 1, 1, False)
    return (t(1, 1, 1, 1), t(1, 5), 1.0, 1, 1, 1, 1, 1, 1, 1, False)


def _torchvision_accepts(op, original, keyset, dtype, device):
    """Whether ``op`` on this device gives ``dtype`` to our kernel: one of ``_OUR_DTYPES[op]``
    that torchvision's kernel takes there (asked once, on a tiny call). A dtype it refuses (e.g.
    half nms on the CPU) keeps going to it, and so keeps its error."""
    key = (op, device.type, dtype)
    ok = _accepted.get(key)
    if ok is None:
        ok = dtype in _OUR_DTYPES[op]
        if ok:
            try:
                original.call_boxed(keyset, *_probe_args(op, dtype, device))
            except Exception:
                ok = False
        _accepted[key] = ok
    return ok


# ---- the adapters --------------------------------------------------------------------------------


def _ours(op):
    return getattr(torch.ops.maskrcnn_fast, op).default


_TAKES = {"nms": _nms_takes, "roi_align": _roi_align_takes, "_roi_align_backward": _backward_takes}


def _adapter(op, dispatch_key):
    original = _originals[(op, dispatch_key)]
    takes = _TAKES[op]
    ours = _ours(op)
    fallback = op + ":torchvision"

    def kernel(keyset, *args):
        first = args[0]
        if takes(*args) and _torchvision_accepts(op, original, keyset, first.dtype, first.device):
            _calls[op] += 1
            return ours(*args).contiguous()  # torchvision returns contiguous tensors
        _calls[fallback] += 1
        return original.call_boxed(keyset, *args)

    kernel.__name__ = kernel.__qualname__ = f"maskrcnn_fast_{op}_{dispatch_key.lower()}"
    return kernel


def _dispatch_keys():
    """CPU, and CUDA where our CUDA kernels are built, a GPU is there and torchvision has CUDA
    kernels to replace."""
    import maskrcnn_fast

    keys = ["CPU"]
    if (maskrcnn_fast.build_info()["cuda_kernels"] and torch.cuda.is_available()
            and all(torch._C._dispatch_has_kernel_for_dispatch_key(f"torchvision::{op}", "CUDA") for op in OPS)):
        keys.append("CUDA")
    return tuple(keys)


def accelerate_torchvision(exact: bool = True):
    """Makes our kernels the CPU (and CUDA) kernels of ``torchvision::nms``,
    ``torchvision::roi_align`` and ``torchvision::_roi_align_backward``.

    Every caller gets them: ``torchvision.ops.nms`` / ``roi_align`` / ``RoIAlign`` and the
    detection models that call them, names bound before this call, ``torch.ops.torchvision.*``
    and TorchScript. Autograd and autocast stay torchvision's. Idempotent; undone by
    :func:`restore_torchvision`. Returns the dispatch keys replaced, e.g. ``("CPU",)``.

    It also replaces torchvision's Python-level detection paths (batched_nms, box_iou,
    AnchorGenerator, MultiScaleRoIAlign, the mask targets; with ``exact=False`` also BoxCoder
    decoding, paste_masks_in_image, RoIHeads.postprocess_detections and the RPN's proposals) by
    our fused ops, for models built before or after the call (``torchvision_models.py``).
    ``exact=True`` keeps only the replacements whose float32 / float64 results are torchvision's
    bit for bit; ``exact=False`` adds fused ops that round differently (docs/accelerate.md).

    Raises RuntimeError when our compiled extension is not loaded (the pure-PyTorch fallback
    would be slower than torchvision) or torchvision's compiled ops are missing.
    """
    global _library, _keys
    if _library is not None:
        torchvision_models.patch(exact, tuple(k.lower() for k in _keys))
        return _keys
    import maskrcnn_fast
    import torchvision  # noqa: F401  registers torchvision::* (and its autograd, autocast)
    from torchvision.extension import _has_ops

    info = maskrcnn_fast.build_info()
    if not info["extension"]:
        raise RuntimeError(f"maskrcnn_fast's compiled extension is not loaded: {info['extension_error']}")
    if not _has_ops():
        raise RuntimeError("torchvision's compiled ops are not loaded: nothing to accelerate")
    keys = _dispatch_keys()
    _originals.clear()
    for op in OPS:
        for key in keys:
            _originals[(op, key)] = torch.library.get_kernel(f"torchvision::{op}", key)
    lib = torch.library.Library("torchvision", "IMPL")
    try:
        for op in OPS:
            for key in keys:
                lib.impl(op, _adapter(op, key), key, with_keyset=True)
    except BaseException:
        lib._destroy()
        raise
    try:
        torchvision_models.patch(exact, tuple(k.lower() for k in keys))
    except BaseException:
        lib._destroy()
        raise
    _library, _keys = lib, keys
    return keys


def restore_torchvision():
    """Undoes :func:`accelerate_torchvision`: torchvision's own kernels run again. Idempotent."""
    global _library, _keys
    if _library is None:
        return
    lib, _library, _keys = _library, None, ()
    torchvision_models.unpatch()
    lib._destroy()
    _originals.clear()
    _accepted.clear()


@contextlib.contextmanager
def torchvision_accelerated(exact: bool = True):
    """``with torchvision_accelerated(): ...`` runs the block with :func:`accelerate_torchvision`
    in force and restores torchvision's kernels on exit, also on an exception. Already
    accelerated on entry: it stays accelerated on exit, in the mode (``exact``) already in force
    (nesting is safe)."""
    was = is_accelerated()
    if not was:
        accelerate_torchvision(exact)
    try:
        yield
    finally:
        if not was:
            restore_torchvision()
