"""Box and mask heads on the RoI features: layers, training targets, losses and inference.

Same results and state_dict keys as torchvision's ``RoIHeads`` with ``TwoMLPHead``,
``FastRCNNPredictor``, ``MaskRCNNHeads`` and ``MaskRCNNPredictor``. In inference the box head
runs on the RPN's padded proposals and one ``detection_postprocess`` call
(:meth:`RoIHeads.postprocess_detections`) turns its outputs into padded detections; the
detections are cut to their counts (the one host synchronisation of inference) before the mask
head, so that it runs only on real detections. :meth:`RoIHeads.forward_padded` instead runs the
mask head on the padded detections (static shapes, no host synchronisation), for torch.compile
and CUDA graphs.
"""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..structures import PackedMasks
from .matching import BalancedPositiveNegativeSampler, Matcher, pad_rows

__all__ = [
    "TwoMLPHead",
    "FastRCNNPredictor",
    "MaskRCNNHeads",
    "MaskRCNNPredictor",
    "RoIHeads",
    "fastrcnn_loss",
    "maskrcnn_loss",
]


class TwoMLPHead(nn.Module):
    """Tensor[K, C, S, S] -> flatten -> fc6 + ReLU -> fc7 + ReLU -> Tensor[K, representation_size]."""

    def __init__(self, in_channels: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    """Tensor[K, D] -> class logits Tensor[K, num_classes], deltas Tensor[K, 4 * num_classes]."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class MaskRCNNHeads(nn.Sequential):
    """3x3 conv + ReLU per entry of ``layers`` (keys ``N.0.weight``), padding = dilation."""

    _version = 2

    def __init__(self, in_channels: int, layers: Tuple[int, ...], dilation: int = 1):
        blocks, c = [], in_channels
        for width in layers:
            conv = nn.Conv2d(c, width, 3, padding=dilation, dilation=dilation)
            blocks.append(nn.Sequential(conv, nn.ReLU(inplace=True)))
            c = width
        super().__init__(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version", None) is None or local_metadata["version"] < 2:
            # torchvision's COCO_V1 checkpoint names the convs mask_fcn1..mask_fcnN
            for i in range(len(self)):
                for t in ("weight", "bias"):
                    if f"{prefix}mask_fcn{i + 1}.{t}" in state_dict:
                        state_dict[f"{prefix}{i}.0.{t}"] = state_dict.pop(f"{prefix}mask_fcn{i + 1}.{t}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class MaskRCNNPredictor(nn.Sequential):
    """2x transposed conv + ReLU, then a 1x1 conv: Tensor[K, C, S, S] -> logits
    Tensor[K, num_classes, 2S, 2S]."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__(
            OrderedDict(
                conv5_mask=nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0),
                relu=nn.ReLU(inplace=True),
                mask_fcn_logits=nn.Conv2d(dim_reduced, num_classes, 1, 1, 0),
            )
        )
        for name, p in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")


def fastrcnn_loss(
    class_logits: Tensor, box_regression: Tensor, labels: List[Tensor], regression_targets: List[Tensor]
) -> Tuple[Tensor, Tensor]:
    """Cross-entropy over all sampled proposals; smooth-L1 (beta 1/9) of the positives' deltas
    for their ground-truth class, summed and divided by the number of sampled proposals."""
    labels = torch.cat(labels)
    regression_targets = torch.cat(regression_targets)
    cls_loss = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    box_regression = box_regression.reshape(class_logits.shape[0], -1, 4)
    box_loss = F.smooth_l1_loss(
        box_regression[pos, labels[pos]], regression_targets[pos], beta=1 / 9, reduction="sum"
    )
    return cls_loss, box_loss / labels.numel()


def _packed_targets(
    gt_masks: List[PackedMasks], proposals: List[Tensor], matched_idxs: List[Tensor], m: int,
    packed_mask_targets: Callable,
) -> Tensor:
    """The mask targets of all images from their PackedMasks in one ``packed_mask_targets`` call:
    the images' instances concatenated, each box pointing at its image's first row plus its
    matched index."""
    data, instances = PackedMasks.cat(gt_masks)
    device = proposals[0].device if proposals else gt_masks[0].device
    data, instances = data.to(device), instances.to(device)
    first = 0
    index = []
    for pm, idx in zip(gt_masks, matched_idxs):
        index.append(idx.to(torch.int64) + first)
        first += len(pm)
    boxes = torch.cat(proposals) if proposals else torch.zeros((0, 4), device=device)
    index_t = torch.cat(index) if index else torch.zeros(0, dtype=torch.int64, device=device)
    return packed_mask_targets(data, instances, boxes, index_t, m)


def maskrcnn_loss(
    mask_logits: Tensor,
    proposals: List[Tensor],
    gt_masks: List[Union[Tensor, PackedMasks]],
    gt_labels: List[Tensor],
    matched_idxs: List[Tensor],
    mask_targets: Callable,
    packed_mask_targets: Optional[Callable] = None,
) -> Tensor:
    """Per-pixel BCE between the logits of each positive proposal's class and its ground-truth
    mask cut out by the proposal (ROIAlign on the full mask, 1 pixel = 1 unit) and resized to
    M x M (mask_logits: Tensor[K, C, M, M]).

    Dense masks (Tensor[G_i, H_i, W_i]): ``mask_targets`` (maskrcnn_fast.ops' signature) makes
    the targets of all images in one call. PackedMasks (maskrcnn_fast.structures): one
    ``packed_mask_targets`` call (maskrcnn_fast.ops' signature; default that op) for all images,
    the same targets bit for bit; where the images mix the two, the dense ones are packed."""
    m = mask_logits.shape[-1]
    labels = torch.cat([gl[i] for gl, i in zip(gt_labels, matched_idxs)])
    if any(isinstance(g, PackedMasks) for g in gt_masks):
        if packed_mask_targets is None:
            from ..ops import packed_mask_targets
        packed = [g if isinstance(g, PackedMasks) else PackedMasks.from_dense(g) for g in gt_masks]
        targets = _packed_targets(packed, list(proposals), list(matched_idxs), m, packed_mask_targets)
    else:
        targets = mask_targets(gt_masks, proposals, matched_idxs, m)
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    picked = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(picked, targets)


class RoIHeads(nn.Module):
    """Box head (and mask head when ``mask_roi_pool``/``mask_head``/``mask_predictor`` are given).

    box_roi_pool, box_head, box_predictor, mask_*: modules; box_coder: encodes the training
    targets, its ``weights`` and ``bbox_xform_clip`` decode the deltas; detection_postprocess,
    mask_targets, match_boxes, packed_mask_targets: callables (maskrcnn_fast.ops' signatures;
    match_boxes or packed_mask_targets None: that op). Targets' masks: Tensor[K, H, W] or
    maskrcnn_fast.structures.PackedMasks (see :func:`maskrcnn_loss`).

    forward(features dict, proposals Tensor[N, P, 4] padded, proposal_counts Tensor[N],
    image_shapes, targets) ->
    (list of dicts boxes [D, 4], labels [D], scores [D], masks [D, 1, M, M] in eval; dict of
    losses loss_classifier, loss_box_reg, loss_mask in training).
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        box_coder,
        detection_postprocess: Callable,
        mask_targets: Callable,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        mask_roi_pool: Optional[nn.Module] = None,
        mask_head: Optional[nn.Module] = None,
        mask_predictor: Optional[nn.Module] = None,
        match_boxes: Optional[Callable] = None,
        packed_mask_targets: Optional[Callable] = None,
    ):
        super().__init__()
        if match_boxes is None:
            from ..ops import match_boxes
        self.match_boxes = match_boxes
        # None: maskrcnn_fast.ops.packed_mask_targets, looked up when PackedMasks targets come
        self.packed_mask_targets = packed_mask_targets
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_coder = box_coder
        self.detection_postprocess = detection_postprocess
        self.mask_targets = mask_targets
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.mask_roi_pool = mask_roi_pool
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor

    # Detections through the mask head at once in inference (mask_inference).
    MASK_HEAD_ROWS = 512

    def has_mask(self) -> bool:
        return self.mask_roi_pool is not None and self.mask_head is not None and self.mask_predictor is not None

    # ---- training targets ---------------------------------------------------------------------

    def assign_targets_to_proposals(
        self, boxes: Tensor, valid: Tensor, gt_boxes: Tensor, gt_counts: Tensor, gt_labels: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """boxes (Tensor[N, B, 4]) with valid (bool Tensor[N, B]) rows, gt_boxes (Tensor[N, G, 4])
        padded with zeros, gt_counts (Tensor[N]), gt_labels (int64 Tensor[N, G]) -> the matched
        ground-truth index (clamped to >= 0) and the label of each box (its ground truth's class,
        0 background, -1 ignored: also the invalid rows), Tensor[N, B] each, for all images at once.

        The invalid rows are zero boxes (padding): their IoU with any real ground truth is 0,
        never above a valid box's, so even low-quality matching gives the valid rows the result
        of matching them alone."""
        m = self.match_boxes(
            gt_boxes, gt_counts, boxes, None, self.proposal_matcher.high_threshold,
            self.proposal_matcher.low_threshold, self.proposal_matcher.allow_low_quality_matches,
        )
        clamped = m.clamp(min=0)
        labels = gt_labels.gather(1, clamped).to(torch.int64)
        labels = labels.masked_fill_(m == Matcher.BELOW_LOW_THRESHOLD, 0)
        labels = labels.masked_fill_((m == Matcher.BETWEEN_THRESHOLDS) | ~valid, -1)
        return clamped, labels

    def select_training_samples(
        self, proposals: Tensor, proposal_counts: Tensor, targets: List[Dict[str, Tensor]]
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor], List[Tensor]]:
        """Adds the ground-truth boxes to the proposals, matches and samples them, as torchvision.

        proposals (Tensor[N, P, 4], the first proposal_counts[i] valid, zero-padded) -> per
        image: sampled proposals Tensor[S_i, 4], their matched ground-truth indices, labels and
        regression targets. The boxes of image i are laid out as [N, P + G, 4] = proposals then
        the padded ground truths, so the valid rows keep torchvision's order (proposals, then
        ground truths); one match_boxes and one encode for all images."""
        dtype = proposals.dtype
        gt, gt_counts = pad_rows([t["boxes"].to(dtype) for t in targets])  # [N, G >= 1, 4]
        gt_labels, _ = pad_rows([t["labels"] for t in targets])
        n, p, g = proposals.shape[0], proposals.shape[1], gt.shape[1]
        rows = torch.arange(p + g, device=proposals.device)
        valid = torch.where(rows < p, rows < proposal_counts[:, None], rows - p < gt_counts[:, None])
        # padding rows zeroed whatever the caller left there (see assign_targets_to_proposals)
        boxes = torch.cat([proposals, gt], 1).masked_fill_(~valid[..., None], 0)
        matched, labels = self.assign_targets_to_proposals(boxes, valid, gt, gt_counts, gt_labels)
        pos, neg = self.fg_bg_sampler(list(labels.unbind(0)))
        keep = torch.where((torch.stack(pos) | torch.stack(neg)).reshape(-1))[0]
        sizes = torch.bincount(keep // (p + g), minlength=n).tolist()
        boxes = boxes.reshape(-1, 4)[keep]
        matched, labels = matched.reshape(-1)[keep], labels.reshape(-1)[keep]
        # images without ground truth match their zero padding row, as torchvision's zeros((1, 4))
        targets_ = self.box_coder.encode_single(gt.reshape(-1, 4)[keep // (p + g) * g + matched], boxes)
        return (list(boxes.split(sizes)), list(matched.split(sizes)), list(labels.split(sizes)),
                list(targets_.split(sizes)))

    # ---- inference ----------------------------------------------------------------------------

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: Tensor,
        proposal_counts: Tensor,
        image_shapes: List[Tuple[int, int]],
        image_sizes: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """class_logits (Tensor[N*P, C]), box_regression (Tensor[N*P, 4C]), proposals
        (Tensor[N, P, 4], the first proposal_counts[i] valid) -> boxes Tensor[N, D, 4], scores
        Tensor[N, D], labels Tensor[N, D] (int64, >= 1), counts Tensor[N]; D =
        detections_per_img, by decreasing score, zero-padded. No host synchronisation.

        Softmax; decode per class and clip to the image; every (proposal, class >= 1) pair is a
        candidate; drop scores <= score_thresh and boxes under 0.01 px; NMS per class; top-k.
        image_sizes: image_shapes as int64 Tensor[N, 2] on the device, when the caller has it
        (a CUDA graph cannot copy from the host while it captures).
        """
        sizes = image_sizes
        if sizes is None:
            sizes = torch.tensor(image_shapes, dtype=torch.int64, device=proposals.device).reshape(-1, 2)
        boxes, scores, labels, counts, _ = self.detection_postprocess(
            class_logits,
            box_regression,
            proposals,
            proposal_counts,
            sizes,
            self.box_coder.weights,
            self.box_coder.bbox_xform_clip,
            self.score_thresh,
            self.nms_thresh,
            self.detections_per_img,
        )
        return boxes, scores, labels, counts

    @staticmethod
    def mask_probabilities(mask_logits: Tensor, labels: List[Tensor]) -> List[Tensor]:
        """mask_logits (Tensor[D, C, M, M]) -> per image the sigmoid of each detection's own class,
        Tensor[D_i, 1, M, M]."""
        flat = torch.cat(labels)
        picked = mask_logits[torch.arange(flat.shape[0], device=flat.device), flat][:, None]
        return list(picked.sigmoid().split([lab.shape[0] for lab in labels]))

    def mask_inference(
        self, features: Dict[str, Tensor], boxes: List[Tensor], labels: List[Tensor], image_shapes: List[Tuple[int, int]]
    ) -> List[Tensor]:
        """Each image's detections (boxes Tensor[D_i, 4], labels Tensor[D_i]) -> their mask
        probabilities Tensor[D_i, 1, M, M], at most MASK_HEAD_ROWS rows through the mask head at
        once: its upsampled features are 256 x 28 x 28 float32 (0.8 MB) per detection, so
        thousands of detections in one pass cost gigabytes. Each row's result is its own, up to
        float rounding: oneDNN and cuDNN pick their convolution algorithm by batch size, so
        above MASK_HEAD_ROWS detections the masks equal one pass's to rounding, not bit for bit
        (at or below it, nothing changes)."""
        if sum(b.shape[0] for b in boxes) <= self.MASK_HEAD_ROWS:
            logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
            return self.mask_probabilities(logits, labels)
        step = self.MASK_HEAD_ROWS
        parts: List[List[Tensor]] = [[] for _ in boxes]
        for i, (b, lab) in enumerate(zip(boxes, labels)):
            for s in range(0, b.shape[0], step):
                only = [b[s : s + step] if j == i else b[:0] for j in range(len(boxes))]
                logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, only, image_shapes)))
                parts[i].append(self.mask_probabilities(logits, [lab[s : s + step]])[0])
        some = next(p[0] for p in parts if p)
        return [torch.cat(p) if p else some.new_zeros((0,) + tuple(some.shape[1:])) for p in parts]

    def forward_padded(
        self,
        features: Dict[str, Tensor],
        proposals: Tensor,
        proposal_counts: Tensor,
        image_shapes: List[Tuple[int, int]],
        image_sizes: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """Inference with static shapes and no host synchronisation.

        proposals (Tensor[N, P, 4], padded), proposal_counts (Tensor[N]) -> dict boxes
        Tensor[N, D, 4], scores Tensor[N, D], labels Tensor[N, D], counts Tensor[N] (valid rows
        per image, on the device) and, with a mask head, masks Tensor[N, D, 1, M, M]
        (probabilities); D = detections_per_img. The rows after counts[i] are padding (their
        masks are computed from the zero boxes and mean nothing). The mask head runs on all
        N * D rows; each row's result is its own, so the valid rows equal :meth:`forward`'s.
        image_sizes: as in :meth:`postprocess_detections`.
        """
        if self.training:
            raise RuntimeError("forward_padded is for inference; call eval() first")
        box_features = self.box_roi_pool(features, list(proposals), image_shapes)
        class_logits, box_regression = self.box_predictor(self.box_head(box_features))
        boxes, scores, labels, counts = self.postprocess_detections(
            class_logits, box_regression, proposals, proposal_counts, image_shapes, image_sizes
        )
        out = {"boxes": boxes, "scores": scores, "labels": labels, "counts": counts}
        if self.has_mask():
            n, d = labels.shape
            mask_features = self.mask_roi_pool(features, list(boxes), image_shapes)
            mask_logits = self.mask_predictor(self.mask_head(mask_features))
            flat = labels.reshape(-1)  # padding rows have label 0: a valid index, ignored later
            picked = mask_logits[torch.arange(flat.shape[0], device=flat.device), flat]
            out["masks"] = picked.sigmoid().reshape(n, d, 1, *mask_logits.shape[-2:])
        return out

    def forward(
        self,
        features: Dict[str, Tensor],
        proposals: Tensor,
        proposal_counts: Tensor,
        image_shapes: List[Tuple[int, int]],
        targets: Optional[List[Dict[str, Tensor]]] = None,
    ) -> Tuple[List[Dict[str, Tensor]], Dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, matched, labels, regression_targets = self.select_training_samples(
                proposals, proposal_counts, targets
            )
            box_features = self.box_roi_pool(features, proposals, image_shapes)
        else:
            box_features = self.box_roi_pool(features, list(proposals), image_shapes)
        class_logits, box_regression = self.box_predictor(self.box_head(box_features))

        result: List[Dict[str, Tensor]] = []
        losses: Dict[str, Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        else:
            boxes, scores, det_labels, counts = self.postprocess_detections(
                class_logits, box_regression, proposals, proposal_counts, image_shapes
            )
            result = [
                {"boxes": b[:k], "labels": lab[:k], "scores": s[:k]}
                for b, s, lab, k in zip(boxes, scores, det_labels, counts.tolist())
            ]

        if self.has_mask():
            if self.training:
                # only the positive proposals learn masks
                pos = [torch.where(lab > 0)[0] for lab in labels]
                mask_proposals = [p[k] for p, k in zip(proposals, pos)]
                pos_matched = [m[k] for m, k in zip(matched, pos)]
            else:
                probs = self.mask_inference(features, [r["boxes"] for r in result], [r["labels"] for r in result],
                                            image_shapes)
                for r, p in zip(result, probs):
                    r["masks"] = p
                return result, losses
            mask_features = self.mask_roi_pool(features, mask_proposals, image_shapes)
            mask_logits = self.mask_predictor(self.mask_head(mask_features))
            if self.training:
                losses["loss_mask"] = maskrcnn_loss(
                    mask_logits,
                    mask_proposals,
                    [t["masks"] for t in targets],
                    [t["labels"] for t in targets],
                    pos_matched,
                    self.mask_targets,
                    self.packed_mask_targets,
                )
        return result, losses
