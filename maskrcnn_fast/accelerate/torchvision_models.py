"""Our fused ops behind torchvision's Python-level detection paths (issue 20, model level).

torchvision's detection models reach their box and mask arithmetic through module attributes
read at call time (``box_ops.batched_nms``, ``box_ops.box_iou``, ``poolers._multiscale_roi_align``,
``roi_heads.project_masks_on_boxes``, ``transform.paste_masks_in_image``) and through methods of
their classes (``AnchorGenerator.grid_anchors``, ``BoxCoder.decode_single``,
``RoIHeads.postprocess_detections``). Those attributes are replaced here, so models built before
the call and after it both take the new code; :func:`unpatch` puts every original back. The RPN
and the box head bind ``box_ops.box_iou`` as an instance attribute (``self.box_similarity``) at
construction: a data descriptor on their classes hands our ``box_iou`` to instances that hold
torchvision's and leaves any other choice alone.

Every replacement checks its call first and runs torchvision's own code (the original, kept
here) for any call our op would answer differently: other dtypes, devices our kernels do not
serve, TorchScript and tracing, subclasses, nondefault options. Two levels:

- ``exact=True`` (the default): only replacements whose float32 and float64 results are
  torchvision's bit for bit (the order of tied scores aside): ``batched_nms`` where torchvision
  takes its per-class path, ``box_iou``, ``AnchorGenerator.grid_anchors``,
  ``MultiScaleRoIAlign``'s levels, ``project_masks_on_boxes`` (the mask targets).
- ``exact=False`` adds the fused ops that round differently: ``BoxCoder.decode_single``
  (``exp`` within 1-2 ulp of torch's), ``paste_masks_in_image`` (bilinear weights computed
  directly: within float32 rounding), ``RoIHeads.postprocess_detections`` (``detection_postprocess``:
  softmax within 1-2 ulp, exact NMS instead of the coordinate-offset trick), ``batched_nms`` for
  every size (exact per-category NMS instead of the coordinate-offset trick) and the RPN's
  anchors + decode + filtering (``rpn_proposals``). In float64 the detections are torchvision's
  to rounding; in float32 near-tied scores can swap, which can change a top-k cut.
"""
import math
from collections import Counter

import torch

__all__ = ["patch", "unpatch", "patched", "model_calls"]

_DTYPES = (torch.float32, torch.float64)
_patches = []  # (owner, attribute, owner had it in its own __dict__, original value)
_state = {"exact": None, "devices": ()}
_calls = Counter()  # "name" -> calls our op took; "name:torchvision" -> calls handed back


def model_calls():
    """Counts since the process started: ``{"batched_nms": n, "batched_nms:torchvision": m, ...}``."""
    return dict(_calls)


def patched():
    """None when torchvision's Python code is untouched, else the ``exact`` flag in force."""
    return _state["exact"]


def _scripting():
    import torchvision

    return torch.jit.is_scripting() or torch.jit.is_tracing() or torchvision._is_tracing()


def _served(*tensors):
    """All tensors on one device our kernels serve, float32 or float64 (one dtype)."""
    first = tensors[0]
    return (first.device.type in _state["devices"] and first.dtype in _DTYPES
            and all(t.device == first.device and t.dtype == first.dtype for t in tensors))


def _took(name, ours):
    _calls[name if ours else name + ":torchvision"] += 1
    return ours


# ---- replacements -------------------------------------------------------------------------------


def _make_batched_nms(original):
    from maskrcnn_fast import ops

    def batched_nms(boxes, scores, idxs, iou_threshold):
        # torchvision's per-category loop (above 4000 values on the CPU, 100000 elsewhere) is exact
        # NMS per category, as ours; below that it offsets the boxes (rounding them), so the exact
        # mode leaves those calls to it.
        big = boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000)
        if _took("batched_nms", (
            (big or not _state["exact"]) and not _scripting() and _served(boxes, scores)
            and boxes.dim() == 2 and boxes.size(1) == 4 and scores.dim() == 1
            and idxs.dim() == 1 and idxs.device == boxes.device
            and not idxs.dtype.is_floating_point and idxs.dtype != torch.bool
            and boxes.size(0) == scores.size(0) == idxs.size(0)
            and float(iou_threshold) >= 0  # False for NaN: torchvision takes it, ours not
        )):
            keep = ops.batched_nms(boxes, scores, idxs, iou_threshold)
            if big:
                # the same kept set; torchvision's order, tied scores included: its loop sorts the
                # kept indices (ascending) by score with torch.sort, which orders ties its own way
                keep = keep.sort()[0]
                keep = keep[scores[keep].sort(descending=True)[1]]
            return keep
        return original(boxes, scores, idxs, iou_threshold)

    return batched_nms


def _make_box_iou(original):
    from maskrcnn_fast import ops

    def box_iou(boxes1, boxes2, fmt="xyxy"):
        if _took("box_iou", (
            fmt == "xyxy" and not _scripting() and _served(boxes1, boxes2)
            and boxes1.dim() == 2 and boxes2.dim() == 2 and boxes1.size(1) == 4 and boxes2.size(1) == 4
        )):
            return ops.box_iou(boxes1, boxes2)
        return original(boxes1, boxes2, fmt)

    return box_iou


class _BoxSimilarity:
    """``box_similarity`` of RPN / RoIHeads instances: torchvision's box_iou (bound at
    construction) reads as ours; anything else an instance holds is returned as it is."""

    def __init__(self, original, ours):
        self.original, self.ours = original, ours

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__.get("box_similarity", self.original)
        return self.ours if value is self.original else value

    def __set__(self, obj, value):
        # a model built while patched stores torchvision's function, so it is torchvision's again
        # after the undo
        obj.__dict__["box_similarity"] = self.original if value is self.ours else value


def _make_grid_anchors(original):
    from maskrcnn_fast import ops

    def grid_anchors(self, grid_sizes, strides):
        cells = self.cell_anchors
        if _took("grid_anchors", (
            not _scripting() and cells is not None and len(cells) > 0
            and len(grid_sizes) == len(strides) == len(cells) and _served(*cells)
            and all(c.dim() == 2 and c.size(1) == 4 for c in cells)
        )):
            flat = ops.grid_anchors(list(cells), [list(g) for g in grid_sizes], [list(s) for s in strides])
            counts = [int(g[0]) * int(g[1]) * c.shape[0] for g, c in zip(grid_sizes, cells)]
            return list(flat.split(counts))
        return original(self, grid_sizes, strides)

    return grid_anchors


def _consecutive_powers_of_two(scales):
    levels = [-math.log2(s) for s in scales]
    return (all(lv == round(lv) for lv in levels)
            and all(b - a == 1 for a, b in zip(levels, levels[1:])))


def _make_multiscale_roi_align(original):
    from maskrcnn_fast import ops
    from torchvision.ops.poolers import LevelMapper

    def _multiscale_roi_align(x_filtered, boxes, output_size, sampling_ratio, scales, mapper):
        # One map: torchvision calls roi_align, which the dispatcher already gives to our kernel.
        if _took("multiscale_roi_align", (
            not _scripting() and scales is not None and type(mapper) is LevelMapper
            and len(x_filtered) > 1 and len(scales) == len(x_filtered) <= 8
            and _consecutive_powers_of_two(scales)
            and mapper.k_min == round(-math.log2(scales[0])) and mapper.k_max == round(-math.log2(scales[-1]))
            and isinstance(mapper.s0, int) and isinstance(mapper.lvl0, int)
            and all(isinstance(b, torch.Tensor) and b.dim() == 2 and b.size(1) == 4 for b in boxes)
            and _served(*x_filtered, *boxes) and all(x.dim() == 4 for x in x_filtered)
            and -1 <= int(sampling_ratio) <= 1024
        )):
            out = ops.multilevel_roi_align(
                list(x_filtered), list(boxes), tuple(output_size), list(scales), int(sampling_ratio), False,
                mapper.s0, mapper.lvl0, float(mapper.eps),
            )
            return out.contiguous()  # torchvision fills a contiguous NCHW tensor
        return original(x_filtered, boxes, output_size, sampling_ratio, scales, mapper)

    return _multiscale_roi_align


def _make_project_masks_on_boxes(original):
    from maskrcnn_fast import ops

    def project_masks_on_boxes(gt_masks, boxes, matched_idxs, M):
        if _took("mask_targets", (
            not _scripting() and gt_masks.dtype in (torch.uint8, torch.bool) and gt_masks.dim() == 3
            and _served(boxes) and gt_masks.device == boxes.device and boxes.dim() == 2
            and boxes.size(1) == 4 and matched_idxs.dim() == 1 and matched_idxs.size(0) == boxes.size(0)
            and not matched_idxs.dtype.is_floating_point and int(M) > 0
        )):
            return ops.mask_targets([gt_masks], boxes, matched_idxs, int(M))
        return original(gt_masks, boxes, matched_idxs, M)

    return project_masks_on_boxes


# ---- exact=False: the fused ops that round differently --------------------------------------------


def _make_decode_single(original):
    from maskrcnn_fast import ops

    def decode_single(self, rel_codes, boxes):
        if _took("decode_boxes", (
            not _scripting() and _served(rel_codes) and boxes.device == rel_codes.device
            and boxes.dtype.is_floating_point and rel_codes.dim() == 2 and rel_codes.size(1) % 4 == 0
            and boxes.dim() == 2 and boxes.size(1) == 4 and boxes.size(0) == rel_codes.size(0)
            and rel_codes.size(0) > 0 and not rel_codes.requires_grad and not boxes.requires_grad
        )):
            return ops.decode_boxes(rel_codes, boxes.to(rel_codes.dtype), self.weights, self.bbox_xform_clip)
        return original(self, rel_codes, boxes)

    return decode_single


def _make_paste_masks_in_image(original):
    from maskrcnn_fast import ops

    def paste_masks_in_image(masks, boxes, img_shape, padding=1):
        if _took("paste_masks", (
            not _scripting() and _served(masks) and boxes.device == masks.device
            and boxes.dtype.is_floating_point and masks.dim() == 4 and masks.size(1) == 1
            and boxes.dim() == 2 and boxes.size(1) == 4 and masks.size(0) == boxes.size(0)
            and not masks.requires_grad and int(padding) >= 0
        )):
            return ops.paste_masks(masks, boxes, (int(img_shape[0]), int(img_shape[1])), int(padding))
        return original(masks, boxes, img_shape, padding)

    return paste_masks_in_image


def _make_postprocess_detections(original):
    from maskrcnn_fast import ops
    from torchvision.models.detection._utils import BoxCoder

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        coder = self.box_coder
        if not _took("detection_postprocess", (
            not _scripting() and type(coder) is BoxCoder and len(proposals) > 0
            and _served(class_logits, box_regression, *proposals)
            and class_logits.dim() == 2 and box_regression.dim() == 2
            and box_regression.size(1) == 4 * class_logits.size(1)
            and class_logits.size(0) == sum(p.size(0) for p in proposals)
            and not class_logits.requires_grad and not box_regression.requires_grad
        )):
            return original(self, class_logits, box_regression, proposals, image_shapes)
        counts = [p.size(0) for p in proposals]
        p = max(counts)
        n = len(proposals)
        if all(c == p for c in counts):
            padded = torch.stack(list(proposals))
            logits, regression, count_t = class_logits, box_regression, None
        else:  # rows n * P + i: pad every image's proposals (and their head outputs) to P
            padded = class_logits.new_zeros((n, p, 4))
            logits = class_logits.new_zeros((n * p, class_logits.size(1)))
            regression = box_regression.new_zeros((n * p, box_regression.size(1)))
            start = 0
            for i, c in enumerate(counts):
                padded[i, :c] = proposals[i]
                logits[i * p: i * p + c] = class_logits[start: start + c]
                regression[i * p: i * p + c] = box_regression[start: start + c]
                start += c
            count_t = torch.tensor(counts, dtype=torch.int64, device=class_logits.device)
        sizes = torch.tensor([[int(s[0]), int(s[1])] for s in image_shapes], dtype=torch.int64,
                             device=class_logits.device)
        boxes, scores, labels, kept, _ = ops.detection_postprocess(
            logits, regression, padded, count_t, sizes, coder.weights, coder.bbox_xform_clip,
            self.score_thresh, self.nms_thresh, self.detections_per_img,
        )
        b, s, lab = ops.detections_to_list(boxes, scores, labels, kept)
        return list(b), list(s), list(lab)

    return postprocess_detections


def _make_rpn_forward(original):
    from maskrcnn_fast import ops
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers

    default_clip = math.log(1000.0 / 16)
    methods = ("filter_proposals", "_get_top_n_idx")

    def forward(self, images, features, targets=None):
        feats = list(features.values())
        gen, coder = self.anchor_generator, self.box_coder
        if not (not _scripting() and type(gen) is AnchorGenerator and type(coder) is BoxCoder
                and tuple(coder.weights) == (1.0, 1.0, 1.0, 1.0) and coder.bbox_xform_clip == default_clip
                and all(getattr(type(self), m) is getattr(RegionProposalNetwork, m) for m in methods)
                and len(feats) == len(gen.cell_anchors) and _served(*feats)):
            _calls["rpn_proposals:torchvision"] += 1
            return original(self, images, features, targets)
        objectness, deltas = self.head(feats)
        if not (len(objectness) == len(deltas) == len(feats)
                and all(o.dim() == 4 and d.dim() == 4 and d.size(1) == 4 * o.size(1)
                        and o.size(1) == c.size(0) for o, d, c in zip(objectness, deltas, gen.cell_anchors))):
            _calls["rpn_proposals:torchvision"] += 1
            return original(self, images, features, targets)
        _calls["rpn_proposals"] += 1
        h, w = images.tensors.shape[-2:]
        strides = [(h // f.shape[-2], w // f.shape[-1]) for f in feats]
        cells = [c.to(dtype=feats[0].dtype, device=feats[0].device) for c in gen.cell_anchors]
        sizes = torch.tensor([[int(s[0]), int(s[1])] for s in images.image_sizes], dtype=torch.int64,
                             device=feats[0].device)
        boxes, scores, counts = ops.rpn_proposals(
            [o.detach() for o in objectness], [d.detach() for d in deltas], cells, strides, sizes,
            self.pre_nms_top_n(), self.post_nms_top_n(), self.nms_thresh, self.min_size, self.score_thresh,
        )
        boxes, _ = ops.proposals_to_list(boxes, scores, counts)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("targets should not be None")
            anchors = gen(images, feats)
            flat_objectness, flat_deltas = concat_box_prediction_layers(objectness, deltas)
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = coder.encode(matched_gt_boxes, anchors)
            loss_objectness, loss_rpn_box_reg = self.compute_loss(
                flat_objectness, flat_deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return list(boxes), losses

    return forward


# ---- switching ----------------------------------------------------------------------------------


def _set(owner, name, value):
    had = name in vars(owner)
    _patches.append((owner, name, had, vars(owner).get(name)))
    setattr(owner, name, value)


def patch(exact=True, devices=("cpu",)):
    """Replaces torchvision's detection paths (see the module's docstring). ``devices``: the
    device types our kernels serve (those accelerated at the dispatcher). Re-patches when
    called again with another ``exact``."""
    if _state["exact"] is not None:
        if _state["exact"] == bool(exact) and _state["devices"] == tuple(devices):
            return
        unpatch()
    import torchvision.ops
    import torchvision.ops.boxes as box_ops
    import torchvision.ops.poolers as poolers
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection import anchor_utils, roi_heads, rpn, transform

    try:
        nms_original = box_ops.batched_nms
        new_nms = _make_batched_nms(nms_original)
        _set(box_ops, "batched_nms", new_nms)
        if torchvision.ops.batched_nms is nms_original:
            _set(torchvision.ops, "batched_nms", new_nms)
        iou_original = box_ops.box_iou
        new_iou = _make_box_iou(iou_original)
        _set(box_ops, "box_iou", new_iou)
        if torchvision.ops.box_iou is iou_original:
            _set(torchvision.ops, "box_iou", new_iou)
        for cls in (rpn.RegionProposalNetwork, roi_heads.RoIHeads):
            _set(cls, "box_similarity", _BoxSimilarity(iou_original, new_iou))
        _set(anchor_utils.AnchorGenerator, "grid_anchors",
             _make_grid_anchors(anchor_utils.AnchorGenerator.grid_anchors))
        _set(poolers, "_multiscale_roi_align", _make_multiscale_roi_align(poolers._multiscale_roi_align))
        _set(roi_heads, "project_masks_on_boxes", _make_project_masks_on_boxes(roi_heads.project_masks_on_boxes))
        if not exact:
            _set(det_utils.BoxCoder, "decode_single", _make_decode_single(det_utils.BoxCoder.decode_single))
            paste_original = roi_heads.paste_masks_in_image
            new_paste = _make_paste_masks_in_image(paste_original)
            _set(roi_heads, "paste_masks_in_image", new_paste)
            if transform.paste_masks_in_image is paste_original:
                _set(transform, "paste_masks_in_image", new_paste)
            _set(roi_heads.RoIHeads, "postprocess_detections",
                 _make_postprocess_detections(roi_heads.RoIHeads.postprocess_detections))
            _set(rpn.RegionProposalNetwork, "forward", _make_rpn_forward(rpn.RegionProposalNetwork.forward))
    except BaseException:
        unpatch()
        raise
    _state["exact"], _state["devices"] = bool(exact), tuple(devices)


def unpatch():
    """Puts every original attribute back. Idempotent."""
    while _patches:
        owner, name, had, original = _patches.pop()
        if had:
            setattr(owner, name, original)
        else:
            delattr(owner, name)
    _state["exact"], _state["devices"] = None, ()
