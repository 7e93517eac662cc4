"""Region proposal network: head, proposal filtering, training targets and loss.

Same results as torchvision's ``RegionProposalNetwork``. Proposal filtering
(:meth:`RegionProposalNetwork.filter_proposals`) is one method with a fixed seam: scores, deltas
and anchors in, proposals per image out, so that a fused ``rpn_proposals`` op can replace it.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .matching import BalancedPositiveNegativeSampler, Matcher, box_iou

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
    """anchor_generator, head: modules; box_coder: decodes deltas (weights 1, 1, 1, 1);
    batched_nms: callable(boxes, scores, idxs, iou_threshold) -> kept indices by score.
    pre_nms_top_n / post_nms_top_n: dicts with 'training' and 'testing' counts.

    forward(images: ImageList, features: dict of Tensor[N, C, H_l, W_l], targets) ->
    (list of Tensor[P_i, 4] proposals, dict of losses (empty in eval)).
    """

    def __init__(
        self,
        anchor_generator: nn.Module,
        head: nn.Module,
        box_coder,
        batched_nms: Callable,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_top_n: Dict[str, int],
        post_nms_top_n: Dict[str, int],
        nms_thresh: float,
        score_thresh: float = 0.0,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = box_coder
        self.batched_nms = batched_nms
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre_nms_top_n = dict(pre_nms_top_n)
        self._post_nms_top_n = dict(post_nms_top_n)
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = 1e-3

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def filter_proposals(
        self,
        objectness: Tensor,
        deltas: Tensor,
        anchors: List[Tensor],
        image_sizes: List[Tuple[int, int]],
        num_anchors_per_level: List[int],
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """objectness (Tensor[N, T] logits), deltas (Tensor[N, T, 4]), anchors (list of
        Tensor[T, 4]), image_sizes (list of (h, w)) -> per image proposals Tensor[P_i, 4] and
        scores Tensor[P_i] (sigmoid), P_i <= post_nms_top_n, by decreasing score.

        Per level the pre_nms_top_n best logits; decode and clip to the image; drop boxes under
        min_size and scores under score_thresh; NMS within each level; keep post_nms_top_n.
        """
        n = objectness.shape[0]
        idx, levels = [], []
        offset = 0
        for lvl, ob in enumerate(objectness.split(num_anchors_per_level, 1)):
            k = min(self.pre_nms_top_n(), ob.shape[1])
            idx.append(ob.topk(k, dim=1).indices + offset)
            levels.append(torch.full((k,), lvl, dtype=torch.int64, device=ob.device))
            offset += ob.shape[1]
        idx = torch.cat(idx, 1)
        levels = torch.cat(levels)
        rows = torch.arange(n, device=idx.device)[:, None]
        scores = objectness[rows, idx].sigmoid()
        deltas = deltas[rows, idx]

        final_boxes, final_scores = [], []
        for i in range(n):
            boxes = self.box_coder.decode_single(deltas[i], anchors[i][idx[i]], image_size=image_sizes[i])
            wh = boxes[:, 2:] - boxes[:, :2]
            keep = (wh >= self.min_size).all(1) & (scores[i] >= self.score_thresh)
            b, s, l = boxes[keep], scores[i][keep], levels[keep]
            keep = self.batched_nms(b, s, l, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(b[keep])
            final_scores.append(s[keep])
        return final_boxes, final_scores

    def assign_targets_to_anchors(
        self, anchors: List[Tensor], targets: List[Dict[str, Tensor]]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """-> per image labels (float Tensor[T]: 1 object, 0 background, -1 ignored) and the
        matched ground-truth box of each anchor (Tensor[T, 4])."""
        labels, matched = [], []
        for anc, tgt in zip(anchors, targets):
            gt = tgt["boxes"]
            if gt.numel() == 0:
                matched.append(torch.zeros(anc.shape, dtype=torch.float32, device=anc.device))
                labels.append(torch.zeros(anc.shape[0], dtype=torch.float32, device=anc.device))
                continue
            m = self.proposal_matcher(box_iou(gt, anc))
            matched.append(gt[m.clamp(min=0)])
            lab = (m >= 0).to(torch.float32)
            lab[m == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(lab)
        return labels, matched

    def compute_loss(
        self, objectness: Tensor, deltas: Tensor, labels: List[Tensor], regression_targets: List[Tensor]
    ) -> Tuple[Tensor, Tensor]:
        """objectness (Tensor[N, T]), deltas (Tensor[N, T, 4]) -> (BCE of the sampled anchors,
        smooth-L1 (beta 1/9) of the sampled positives summed / number sampled)."""
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos))[0]
        neg = torch.where(torch.cat(neg))[0]
        sampled = torch.cat([pos, neg])
        labels = torch.cat(labels)
        regression_targets = torch.cat(regression_targets)
        deltas = deltas.reshape(-1, 4)
        box_loss = (
            F.smooth_l1_loss(deltas[pos], regression_targets[pos], beta=1 / 9, reduction="sum") / sampled.numel()
        )
        obj_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled])
        return obj_loss, box_loss

    def forward(
        self, images, features: Dict[str, Tensor], targets: Optional[List[Dict[str, Tensor]]] = None
    ) -> Tuple[List[Tensor], Dict[str, Tensor]]:
        feats = list(features.values())
        logits, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        num_anchors_per_level = [lg[0].numel() for lg in logits]
        objectness, deltas = flatten_head_outputs(logits, deltas)
        boxes, _ = self.filter_proposals(
            objectness.detach(), deltas.detach(), anchors, images.image_sizes, num_anchors_per_level
        )
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            labels, matched = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = [self.box_coder.encode_single(g, a) for g, a in zip(matched, anchors)]
            loss_objectness, loss_rpn_box_reg = self.compute_loss(objectness, deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, losses
