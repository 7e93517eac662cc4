"""Autocast kernels of torch.ops.maskrcnn_fast: what each op does inside ``torch.autocast``.

torchvision registers autocast kernels for its ``roi_align`` and ``nms`` that cast float16 and
bfloat16 arguments to float32 (float64 stays), run the op outside autocast, and cast
``roi_align``'s result back to the input's dtype. The rest of its detection code is plain torch,
whose autocast policy differs per device: on the CPU, ``exp``, ``log``, ``softmax`` and
``interpolate`` run in the input's dtype, so the box decoding, the class probabilities and the
pasted masks of its model come out in bfloat16; on CUDA the same four run in float32, so they
come out in float32. The kernels below give each of our ops the dtypes torchvision's code has
at the same place:

- ``roi_align``, ``multilevel_roi_align`` (and their backward ops), ``nms``, ``batched_nms``,
  ``box_iou``, ``match_boxes``: arguments of one dtype run as they are (our kernels compute
  float16 / bfloat16 in float32 and round once: the values torchvision's cast to float32 and
  back gives); mixed dtypes get torchvision's casts (float16 / bfloat16 -> float32; the ROI
  align result back to the features' dtype). ``multilevel_roi_align`` reads float32 ROIs with
  lower-precision features directly, without casting the feature maps.
- ``rpn_proposals``: float32 on both devices. torchvision's proposals are float32 on CUDA
  (through ``exp``) and bfloat16 on the CPU, where its training path then concatenates them
  with the float32 ground truth, which promotes them back to float32; ours stay float32, so the
  ground-truth boxes are never rounded.
- CUDA only: ``decode_boxes``, ``encode_boxes``, ``detection_postprocess``, ``paste_masks``
  compute in float32 and return float32 (torchvision's ``exp``, ``log``, ``softmax`` and
  ``interpolate`` do so under CUDA autocast). On the CPU they run on the dtypes they get, as
  torchvision's arithmetic does there (mixed box dtypes are handled by the ops themselves).
"""
from typing import Callable, List

import torch
from torch import Tensor

_LOW = (torch.float16, torch.bfloat16)
_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU) | torch._C.DispatchKeySet(
    torch._C.DispatchKey.AutocastCUDA
)
_LIB = None  # the torch.library.Library holding the registrations, alive with the process


def _float32(x):
    """float16 / bfloat16 tensors (also inside lists) to float32; anything else as it is."""
    if isinstance(x, Tensor):
        return x.float() if x.dtype in _LOW else x
    if isinstance(x, (list, tuple)):
        return [_float32(t) for t in x]
    return x


def _floating(args) -> List[Tensor]:
    out = []
    for a in args:
        if isinstance(a, Tensor):
            if a.is_floating_point():
                out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_floating(a))
    return out


def _call(op, args):
    with torch._C._ExcludeDispatchKeyGuard(_KEYS):
        return op(*args)


def _recast(out, dtype):
    if isinstance(out, Tensor):
        return out.to(dtype) if out.is_floating_point() and out.dtype != dtype else out
    if isinstance(out, (list, tuple)):
        return [_recast(t, dtype) for t in out]
    return out


def same_or_float32(op, result_dtype_of: int = -1) -> Callable:
    """One dtype: the op as it is; mixed: float16 / bfloat16 -> float32, the floating results
    back to the dtype argument ``result_dtype_of`` had (its first tensor for a list; -1: no
    cast back)."""

    def kernel(*args):
        if len({t.dtype for t in _floating(args)}) <= 1:
            return _call(op, args)
        out = _call(op, [_float32(a) for a in args])
        if result_dtype_of < 0:
            return out
        ref = args[result_dtype_of]
        return _recast(out, (ref[0] if isinstance(ref, (list, tuple)) else ref).dtype)

    return kernel


def multilevel_kernel(op) -> Callable:
    """multilevel_roi_align and its backward: (features or grad, rois, ...). The op takes ROIs
    of the features' dtype, or float32 ROIs with float16 / bfloat16 features, as they are;
    otherwise float16 / bfloat16 ROIs go to float32 (and features too, where still needed)."""

    def kernel(first, rois, *rest):
        dtype = (first[0] if isinstance(first, (list, tuple)) and len(first) else first).dtype
        if rois.dtype == dtype or (rois.dtype == torch.float32 and dtype in _LOW):
            return _call(op, (first, rois) + rest)
        rois = _float32(rois)
        if not (rois.dtype == dtype or (rois.dtype == torch.float32 and dtype in _LOW)):
            first = _float32(first)
        return _recast(_call(op, (first, rois) + rest), dtype)

    return kernel


def promote(op) -> Callable:
    """Two box tensors of one role (box_iou, match_boxes): mixed dtypes promoted, as the Python
    wrappers do."""

    def kernel(*args):
        floats = _floating(args)
        if len({t.dtype for t in floats}) <= 1:
            return _call(op, args)
        dtype = floats[0].dtype
        for t in floats[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        return _call(op, [a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args])

    return kernel


def float32(op) -> Callable:
    """float16 / bfloat16 arguments -> float32; the results stay float32."""

    def kernel(*args):
        return _call(op, [_float32(a) for a in args])

    return kernel


def register() -> None:
    global _LIB
    if _LIB is not None:
        return
    ns = torch.ops.maskrcnn_fast
    lib = torch.library.Library("maskrcnn_fast", "IMPL")
    both = ("AutocastCPU", "AutocastCUDA")
    table = {
        "roi_align": (same_or_float32(ns.roi_align.default, 0), both),
        "_roi_align_backward": (same_or_float32(ns._roi_align_backward.default, 0), both),
        "multilevel_roi_align": (multilevel_kernel(ns.multilevel_roi_align.default), both),
        "_multilevel_roi_align_backward": (multilevel_kernel(ns._multilevel_roi_align_backward.default), both),
        "nms": (same_or_float32(ns.nms.default), both),
        "batched_nms": (same_or_float32(ns.batched_nms.default), both),
        "box_iou": (promote(ns.box_iou.default), both),
        "match_boxes": (promote(ns.match_boxes.default), both),
        "rpn_proposals": (float32(ns.rpn_proposals.default), both),
        "decode_boxes": (float32(ns.decode_boxes.default), ("AutocastCUDA",)),
        "encode_boxes": (float32(ns.encode_boxes.default), ("AutocastCUDA",)),
        "detection_postprocess": (float32(ns.detection_postprocess.default), ("AutocastCUDA",)),
        "paste_masks": (float32(ns.paste_masks.default), ("AutocastCUDA",)),
    }
    for name, (kernel, keys) in table.items():
        for key in keys:
            lib.impl(name, kernel, key)
    _LIB = lib
