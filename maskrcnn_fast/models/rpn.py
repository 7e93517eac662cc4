"""Region proposal network: head, proposals, training targets and loss.

Same results as torchvision's ``RegionProposalNetwork``. The proposals of all images come from
one ``rpn_proposals`` call (:meth:`RegionProposalNetwork.filter_proposals`), padded to
post_nms_top_n per image with a count per image on the device, so inference needs no host
synchronisation here.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .matching import BalancedPositiveNegativeSampler, Matcher, pad_rows

__all__ = ["RPNHead", "RegionProposalNetwork", "flatten_head_outputs"]


class RPNHead(nn.Module):
    """A 3x3 conv + ReLU (``conv_depth`` of them), then 1x1 convs for the objectness logit and the
    4 box deltas of each of ``num_anchors`` anchors per location, shared by all levels.

    forward(list of Tensor[N, C, H_l, W_l]) -> (list of Tensor[N, A, H_l, W_l],
    list of Tensor[N, 4A, H_l, W_l]).
    """

    _version = 2

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1):
        super().__init__()
        self.conv = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True))
                for _ in range(conv_depth)
            )
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version", None) is None or local_metadata["version"] < 2:
            # checkpoints from before the conv was wrapped (torchvision's COCO_V1): conv.weight
            for t in ("weight", "bias"):
                if f"{prefix}conv.{t}" in state_dict:
                    state_dict[f"{prefix}conv.0.0.{t}"] = state_dict.pop(f"{prefix}conv.{t}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        logits, deltas = [], []
        for f in features:
            t = self.conv(f)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def flatten_head_outputs(logits: List[Tensor], deltas: List[Tensor]) -> Tuple[Tensor, Tensor]:
    """Per-level head outputs -> objectness Tensor[N, T] and deltas Tensor[N, T, 4], T = sum of
    H_l * W_l * A over levels, ordered (level, y, x, anchor) like the anchors."""
    obj, reg = [], []
    for lg, dl in zip(logits, deltas):
        n, a, h, w = lg.shape
        obj.append(lg.permute(0, 2, 3, 1).reshape(n, -1))
        reg.append(dl.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return torch.cat(obj, 1), torch.cat(reg, 1)


class RegionProposalNetwork(nn.Module):
    """anchor_generator, head: modules; box_coder: encodes the training targets (weights
    1, 1, 1, 1); rpn_proposals: callable, the proposal step (maskrcnn_fast.ops.rpn_proposals'
    signature). pre_nms_top_n / post_nms_top_n: dicts with 'training' and 'testing' counts.
    match_boxes: callable, the training-target matcher (maskrcnn_fast.ops.match_boxes'
    signature; None: that op).

    forward(images: ImageList, features: dict of Tensor[N, C, H_l, W_l], targets) ->
    (proposals Tensor[N, P, 4] padded, counts Tensor[N] of valid rows, dict of losses (empty in
    eval)); P = post_nms_top_n.
    """

    def __init__(
        self,
        anchor_generator: nn.Module,
        head: nn.Module,
        box_coder,
        rpn_proposals: Callable,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_top_n: Dict[str, int],
        post_nms_top_n: Dict[str, int],
        nms_thresh: float,
        score_thresh: float = 0.0,
        match_boxes: Optional[Callable] = None,
    ):
        super().__init__()
        if match_boxes is None:
            from ..ops import match_boxes
        self.match_boxes = match_boxes
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = box_coder
        self.rpn_proposals = rpn_proposals
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre_nms_top_n = dict(pre_nms_top_n)
        self._post_nms_top_n = dict(post_nms_top_n)
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = 1e-3
        # the cell anchors cast to each (dtype, device) once: a CUDA graph cannot copy them from
        # the host while it captures, and a per-call copy would be a host-to-device transfer
        self._cells: Dict[Tuple[torch.dtype, torch.device], List[Tensor]] = {}

    def cell_anchors(self, dtype: torch.dtype, device: torch.device) -> List[Tensor]:
        """The anchor generator's cell anchors (list of Tensor[A_l, 4]) in dtype on device."""
        key = (dtype, device)
        cells = self._cells.get(key)
        if cells is None:
            cells = [c.to(dtype=dtype, device=device) for c in self.anchor_generator.cell_anchors]
            self._cells[key] = cells
        return cells

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def filter_proposals(
        self,
        logits: List[Tensor],
        deltas: List[Tensor],
        images,
        features: List[Tensor],
        image_sizes: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """logits (list of Tensor[N, A, H_l, W_l]), deltas (list of Tensor[N, 4A, H_l, W_l]) ->
        proposals Tensor[N, P, 4], scores Tensor[N, P] (sigmoid, decreasing), counts Tensor[N].

        torchvision's anchors + decode + filter_proposals: per level the pre_nms_top_n best
        logits; decode and clip to the image; drop boxes under min_size and scores under
        score_thresh; NMS within each level; keep post_nms_top_n. No host synchronisation.
        image_sizes: ``images.sizes_tensor()`` when the caller has it on the device already.
        """
        dtype, device = features[0].dtype, features[0].device
        if image_sizes is None:
            image_sizes = images.sizes_tensor()
        cells = self.cell_anchors(dtype, device)
        h, w = images.tensors.shape[-2:]
        strides = [(h // f.shape[-2], w // f.shape[-1]) for f in features]
        return self.rpn_proposals(
            [lg.detach() for lg in logits],
            [d.detach() for d in deltas],
            cells,
            strides,
            image_sizes,
            self.pre_nms_top_n(),
            self.post_nms_top_n(),
            self.nms_thresh,
            self.min_size,
            self.score_thresh,
        )

    def assign_targets_to_anchors(
        self, anchors: Tensor, targets: List[Dict[str, Tensor]]
    ) -> Tuple[Tensor, Tensor]:
        """anchors (Tensor[T, 4], the same for every image of the batch) -> labels float
        Tensor[N, T] (1 object, 0 background, -1 ignored) and the matched ground-truth box of each
        anchor Tensor[N, T, 4] (zeros where an image has no object), for all images at once."""
        gt, gt_counts = pad_rows([t["boxes"] for t in targets])  # [N, G >= 1, 4], zero-padded
        m = self.match_boxes(
            gt, gt_counts, anchors, None, self.proposal_matcher.high_threshold,
            self.proposal_matcher.low_threshold, self.proposal_matcher.allow_low_quality_matches,
        )
        matched = gt.gather(1, m.clamp(min=0)[..., None].expand(-1, -1, 4))
        labels = (m >= 0).to(torch.float32).masked_fill_(m == Matcher.BETWEEN_THRESHOLDS, -1.0)
        return labels, matched

    def compute_loss(
        self, objectness: Tensor, deltas: Tensor, labels: Tensor, regression_targets: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """objectness (Tensor[N, T]), deltas (Tensor[N, T, 4]), labels (Tensor[N, T]),
        regression_targets (Tensor[N * T, 4]) -> (BCE of the sampled anchors, smooth-L1 (beta
        1/9) of the sampled positives summed / number sampled)."""
        pos, neg = self.fg_bg_sampler(list(labels.unbind(0)))
        pos = torch.where(torch.cat(pos))[0]
        neg = torch.where(torch.cat(neg))[0]
        sampled = torch.cat([pos, neg])
        labels = labels.reshape(-1)
        deltas = deltas.reshape(-1, 4)
        box_loss = (
            F.smooth_l1_loss(deltas[pos], regression_targets[pos], beta=1 / 9, reduction="sum") / sampled.numel()
        )
        obj_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled])
        return obj_loss, box_loss

    def forward(
        self,
        images,
        features: Dict[str, Tensor],
        targets: Optional[List[Dict[str, Tensor]]] = None,
        image_sizes: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
        feats = list(features.values())
        logits, deltas = self.head(feats)
        boxes, _, counts = self.filter_proposals(logits, deltas, images, feats, image_sizes)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            # the anchors depend on the padded batch size only: every image has the same
            anchors = self.anchor_generator(images, feats)[0]
            objectness, flat_deltas = flatten_head_outputs(logits, deltas)
            labels, matched = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.box_coder.encode_single(
                matched.reshape(-1, 4), anchors.expand(matched.shape[0], -1, -1).reshape(-1, 4)
            )
            loss_objectness, loss_rpn_box_reg = self.compute_loss(objectness, flat_deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, counts, losses
