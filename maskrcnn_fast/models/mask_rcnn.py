"""The Mask R-CNN module: transform -> backbone -> RPN -> RoI heads -> back to image pixels.

Same arguments, state_dict keys, outputs and losses as torchvision's ``MaskRCNN``; the ops it
runs on are chosen once by ``ops`` ("fused" or "torch", see ``models/opset.py``).
"""
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .. import ops as _ops
from ..structures import PackedMasks
from .opset import OpSet, get_ops
from .roi_heads import FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, RoIHeads, TwoMLPHead
from .rpn import RegionProposalNetwork, RPNHead
from .transform import ImageList, ImageTransform

__all__ = ["MaskRCNN", "check_inputs", "mask_crops"]

_ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))
_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * len(_ANCHOR_SIZES)


def check_inputs(
    images, targets, training: bool, num_channels: int, has_mask: bool, device: Optional[torch.device]
) -> None:
    """Raises TypeError / ValueError, naming the offending image or target, for inputs the model
    cannot take (see MaskRCNN.forward)."""
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be a list of Tensor[{num_channels}, H, W], got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images must not be empty")
    for i, im in enumerate(images):
        if not isinstance(im, Tensor):
            raise TypeError(f"images[{i}] must be a Tensor, got {type(im).__name__}")
        if im.dim() != 3 or im.shape[0] != num_channels:
            raise ValueError(f"images[{i}] must be Tensor[{num_channels}, H, W], got shape {tuple(im.shape)}")
        if not im.is_floating_point():
            raise TypeError(f"images[{i}] must be floating point (values in [0, 1]), got {im.dtype}")
        if im.shape[1] == 0 or im.shape[2] == 0:
            raise ValueError(f"images[{i}] is empty: shape {tuple(im.shape)}")
        if im.device != images[0].device:
            raise ValueError(f"images[{i}] is on {im.device} but images[0] is on {images[0].device}")
    if device is not None and images[0].device != device:
        raise ValueError(f"images are on {images[0].device} but the model is on {device}")

    if targets is None:
        if training:
            raise ValueError("targets are required in training mode")
        return
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError(f"targets must be a list of {len(images)} dicts, one per image")
    for i, (t, im) in enumerate(zip(targets, images)):
        name = f"targets[{i}]"
        if not isinstance(t, dict):
            raise TypeError(f"{name} must be a dict, got {type(t).__name__}")
        for key in ("boxes", "labels") + (("masks",) if has_mask else ()):
            if key not in t:
                raise ValueError(f"{name} lacks '{key}'")
            if key == "masks" and isinstance(t[key], PackedMasks):
                pass  # the masks as crops in their boxes (maskrcnn_fast.structures)
            elif not isinstance(t[key], Tensor):
                kinds = "a Tensor or a PackedMasks" if key == "masks" else "a Tensor"
                raise TypeError(f"{name}['{key}'] must be {kinds}, got {type(t[key]).__name__}")
            if t[key].device != im.device:
                raise ValueError(f"{name}['{key}'] is on {t[key].device} but images[{i}] is on {im.device}")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{name}['boxes'] must be Tensor[K, 4], got shape {tuple(boxes.shape)}")
        if not boxes.is_floating_point():
            raise TypeError(f"{name}['boxes'] must be floating point, got {boxes.dtype}")
        k = boxes.shape[0]
        if labels.dtype != torch.int64 or tuple(labels.shape) != (k,):
            raise ValueError(
                f"{name}['labels'] must be int64 Tensor[{k}], got {labels.dtype} shape {tuple(labels.shape)}"
            )
        bad = boxes[:, 2:] <= boxes[:, :2]  # [K, 2]: no width, no height
        if bad.any():
            j, axis = (int(v) for v in torch.nonzero(bad)[0])
            rule = "y2 > y1" if axis else "x2 > x1"
            raise ValueError(f"{name}['boxes'][{j}] = {boxes[j].tolist()}: boxes must have {rule}")
        if has_mask:
            masks = t["masks"]
            want = (k, im.shape[1], im.shape[2])
            if tuple(masks.shape) != want:
                raise ValueError(
                    f"{name}['masks'] must be Tensor[K, H, W] = {list(want)} (the image's size; a "
                    f"PackedMasks of that shape), got {list(masks.shape)}"
                )


class MaskRCNN(nn.Module):
    """Mask R-CNN with torchvision's arguments (see ``torchvision.models.detection.MaskRCNN``).

    backbone: module with ``out_channels`` returning an OrderedDict '0'..'3', 'pool'.
    num_classes: including the background (None only when box_predictor and mask_predictor are
    given). ops: "fused" (maskrcnn_fast kernels), "torch" (pure PyTorch) or an OpSet.

    forward(images: list of Tensor[3, H, W] float in [0, 1], targets=None):
      eval: list of dicts boxes Tensor[D, 4] (x1, y1, x2, y2 in the image's pixels), labels
      int64 Tensor[D], scores Tensor[D], masks float Tensor[D, 1, H, W] (probabilities);
      training: dict loss_classifier, loss_box_reg, loss_mask, loss_objectness,
      loss_rpn_box_reg. targets: list of dicts boxes float Tensor[K, 4], labels int64 Tensor[K],
      masks Tensor[K, H, W] (uint8 or bool) or a :class:`maskrcnn_fast.structures.PackedMasks` of
      that shape (each mask as its crop in its box: dense scenes, never K x H x W).

    paste_masks_in_image (bool): in eval, paste each detection's mask into the image (the
    default: torchvision's ``masks`` [D, 1, H, W] float, D x H x W float32 numbers per image).
    False: no pasting; the dicts carry ``box_masks`` float Tensor[D, 1, M, M] instead of
    ``masks``, each detection's M x M mask probabilities inside its box (``boxes``, original
    pixels): ``paste_masks(box_masks, boxes, (H, W))`` (the model's op set's) is torchvision's
    ``masks``, and :meth:`mask_crops` pastes them a few at a time, cut to each mask's extent
    (what ``predict`` and ``evaluate`` do, so thousands of detections per image never need a
    D x H x W tensor). A plain attribute, may be set later.

    static_shapes (bool): in eval, run the mask head and the mask pasting on the padded
    detections (``box_detections_per_img`` rows per image, counts on the device) so that
    everything up to the final hand-over has static shapes and no host synchronisation
    (torch.compile without graph breaks, CUDA graphs: see :meth:`forward_padded`); only
    :meth:`compact` cuts the padding. Same outputs; slower on the CPU (the mask head and the
    pasting run on all padded rows), hence off by default. A plain attribute, may be set later.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: Optional[int] = None,
        *,
        min_size: Union[int, Sequence[int]] = 800,
        max_size: int = 1333,
        image_mean: Optional[Sequence[float]] = None,
        image_std: Optional[Sequence[float]] = None,
        rpn_anchor_generator: Optional[nn.Module] = None,
        rpn_head: Optional[nn.Module] = None,
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_score_thresh: float = 0.0,
        box_roi_pool: Optional[nn.Module] = None,
        box_head: Optional[nn.Module] = None,
        box_predictor: Optional[nn.Module] = None,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights: Optional[Sequence[float]] = None,
        mask_roi_pool: Optional[nn.Module] = None,
        mask_head: Optional[nn.Module] = None,
        mask_predictor: Optional[nn.Module] = None,
        size_divisible: int = 32,
        fixed_size=None,
        ops: Union[str, OpSet] = "fused",
        static_shapes: bool = False,
        paste_masks_in_image: bool = True,
    ):
        super().__init__()
        if not hasattr(backbone, "out_channels"):
            raise ValueError("backbone must have an attribute out_channels (the FPN's width)")
        if num_classes is None and (box_predictor is None or mask_predictor is None):
            raise ValueError("num_classes is required unless box_predictor and mask_predictor are given")
        if num_classes is not None and (box_predictor is not None or mask_predictor is not None):
            raise ValueError("give num_classes or box_predictor/mask_predictor, not both")
        self.ops = get_ops(ops)
        op = self.ops
        c = backbone.out_channels

        if rpn_anchor_generator is None:
            rpn_anchor_generator = op.AnchorGenerator(_ANCHOR_SIZES, _ASPECT_RATIOS)
        if rpn_head is None:
            rpn_head = RPNHead(c, len(_ANCHOR_SIZES[0]) * len(_ASPECT_RATIOS[0]))
        rpn = RegionProposalNetwork(
            rpn_anchor_generator,
            rpn_head,
            op.BoxCoder((1.0, 1.0, 1.0, 1.0)),
            op.rpn_proposals,
            rpn_fg_iou_thresh,
            rpn_bg_iou_thresh,
            rpn_batch_size_per_image,
            rpn_positive_fraction,
            dict(training=rpn_pre_nms_top_n_train, testing=rpn_pre_nms_top_n_test),
            dict(training=rpn_post_nms_top_n_train, testing=rpn_post_nms_top_n_test),
            rpn_nms_thresh,
            rpn_score_thresh,
            match_boxes=op.match_boxes,
        )

        levels = ["0", "1", "2", "3"]
        if box_roi_pool is None:
            box_roi_pool = op.MultiScaleRoIAlign(levels, 7, 2)
        if box_head is None:
            box_head = TwoMLPHead(c * 7 * 7, 1024)
        if box_predictor is None:
            box_predictor = FastRCNNPredictor(1024, num_classes)
        if mask_roi_pool is None:
            mask_roi_pool = op.MultiScaleRoIAlign(levels, 14, 2)
        if mask_head is None:
            mask_head = MaskRCNNHeads(c, (256, 256, 256, 256), 1)
        if mask_predictor is None:
            mask_predictor = MaskRCNNPredictor(256, 256, num_classes)
        roi_heads = RoIHeads(
            box_roi_pool,
            box_head,
            box_predictor,
            op.BoxCoder(tuple(bbox_reg_weights) if bbox_reg_weights is not None else (10.0, 10.0, 5.0, 5.0)),
            op.detection_postprocess,
            op.mask_targets,
            box_fg_iou_thresh,
            box_bg_iou_thresh,
            box_batch_size_per_image,
            box_positive_fraction,
            box_score_thresh,
            box_nms_thresh,
            box_detections_per_img,
            mask_roi_pool,
            mask_head,
            mask_predictor,
            match_boxes=op.match_boxes,
            packed_mask_targets=op.packed_mask_targets,
        )

        self.transform = ImageTransform(
            min_size,
            max_size,
            image_mean if image_mean is not None else (0.485, 0.456, 0.406),
            image_std if image_std is not None else (0.229, 0.224, 0.225),
            size_divisible=size_divisible,
            fixed_size=fixed_size,
            paste_masks=op.paste_masks,
        )
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.static_shapes = bool(static_shapes)
        self.paste_masks_in_image = bool(paste_masks_in_image)

    def mask_crops(
        self, box_masks: Tensor, boxes: Tensor, image_size: Sequence[int], threshold: float = 0.5,
        max_bytes: int = 1 << 25,
    ) -> Iterator[Tuple[Tensor, Tuple[int, int]]]:
        """:func:`mask_crops` with this model's paste op: the ``box_masks`` and ``boxes`` of one
        image's output (``paste_masks_in_image=False``), pasted a few at a time into ``image_size``
        (H, W) -> per detection (bool crop Tensor[h, w] on the CPU, its (y0, x0)): the pixels of
        ``masks > threshold`` of the pasted output, exactly."""
        return mask_crops(box_masks, boxes, image_size, threshold, self.transform.paste_masks, max_bytes)

    def _device(self) -> Optional[torch.device]:
        p = next(self.parameters(), None)
        return p.device if p is not None else None

    def forward(
        self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None
    ) -> Union[Dict[str, Tensor], List[Dict[str, Tensor]]]:
        check_inputs(
            images,
            targets,
            self.training,
            len(self.transform.image_mean),
            self.roi_heads.has_mask(),
            self._device(),
        )
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        if self.static_shapes and not self.training:
            image_list, _ = self.transform(images, None)
            padded = self.forward_padded(image_list.tensors, image_list.image_sizes, original_sizes)
            return self.compact(padded, original_sizes)
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, counts, rpn_losses = self.rpn(image_list, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, counts, image_list.image_sizes, targets)
        if self.training:
            return {**head_losses, **rpn_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes,
                                          paste=self.paste_masks_in_image)

    # ---- static-shape inference ---------------------------------------------------------------

    @staticmethod
    def static_constants(
        image_sizes: List[Tuple[int, int]], original_sizes: List[Tuple[int, int]], device
    ) -> Tuple[Tensor, Tensor]:
        """The device tensors :meth:`forward_padded` needs, made once outside a CUDA graph.

        -> (image_sizes as int64 Tensor[N, 2] (h, w); box scale factors float32 Tensor[N, 4]
        (w, h, w, h) original / resized, divided in float32 as torchvision's resize_boxes does,
        so that the rescaled boxes are bit-identical to it).
        """
        sizes = torch.tensor(image_sizes, dtype=torch.int64, device=device).reshape(-1, 2)
        new = torch.tensor([[w, h, w, h] for h, w in original_sizes], dtype=torch.float32, device=device)
        old = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=torch.float32, device=device)
        return sizes, (new / old).reshape(-1, 4)

    def forward_padded(
        self,
        batch: Tensor,
        image_sizes: List[Tuple[int, int]],
        original_sizes: List[Tuple[int, int]],
        constants: Optional[Tuple[Tensor, Tensor]] = None,
    ) -> Dict[str, Union[Tensor, List[Tensor]]]:
        """Eval forward from the transformed batch to padded outputs in original pixels, with
        static shapes and no host synchronisation (what a CUDA graph captures).

        batch (Tensor[N, 3, H_pad, W_pad]): ``self.transform``'s normalised, resized, padded
        batch; image_sizes: its images' resized (h, w); original_sizes: the input images' (h, w);
        constants: :meth:`static_constants` (made here when None).

        Returns dict boxes Tensor[N, D, 4] (original pixels), scores Tensor[N, D], labels
        Tensor[N, D], counts Tensor[N] (valid rows, on the device) and, with a mask head, masks:
        list of N Tensor[D, 1, h_i, w_i] (pasted probabilities, original size); D =
        box_detections_per_img. Rows past counts[i] are padding.
        """
        if self.training:
            raise RuntimeError("forward_padded is for inference; call eval() first")
        if constants is None:
            constants = self.static_constants(image_sizes, original_sizes, batch.device)
        sizes, ratios = constants
        features = self.backbone(batch)
        image_list = ImageList(batch, image_sizes)
        proposals, counts, _ = self.rpn(image_list, features, None, image_sizes=sizes)
        out: Dict[str, Union[Tensor, List[Tensor]]] = dict(
            self.roi_heads.forward_padded(features, proposals, counts, image_sizes, image_sizes=sizes)
        )
        boxes = out["boxes"]
        boxes = (boxes * ratios[:, None, :].to(boxes.dtype)).to(boxes.dtype)
        out["boxes"] = boxes
        if "masks" in out:
            masks = out["masks"]
            if self.paste_masks_in_image:
                out["masks"] = [self.transform.paste_masks(m, b, o) for m, b, o in zip(masks, boxes, original_sizes)]
            else:
                out["box_masks"] = out.pop("masks")
        return out

    @staticmethod
    def compact(
        padded: Dict[str, Union[Tensor, List[Tensor]]], original_sizes: List[Tuple[int, int]], clone: bool = False
    ) -> List[Dict[str, Tensor]]:
        """Padded outputs of :meth:`forward_padded` -> torchvision's list of dicts (boxes, labels,
        scores, masks or box_masks) of exact sizes. The hand-over to the user: reads the counts on the host
        (the one synchronisation). clone: copy out of the padded buffers (a CUDA graph's static
        outputs are overwritten by its next replay)."""
        ks = padded["counts"].tolist()
        result: List[Dict[str, Tensor]] = []
        for i, k in enumerate(ks):
            r = {
                "boxes": padded["boxes"][i, :k],
                "labels": padded["labels"][i, :k],
                "scores": padded["scores"][i, :k],
            }
            for key in ("masks", "box_masks"):
                if key in padded:
                    r[key] = padded[key][i][:k]
            if clone:
                r = {key: v.clone() for key, v in r.items()}
            result.append(r)
        return result


def mask_crops(
    box_masks: Tensor,
    boxes: Tensor,
    image_size: Sequence[int],
    threshold: float = 0.5,
    paste_masks: Optional[Callable] = None,
    max_bytes: int = 1 << 25,
) -> Iterator[Tuple[Tensor, Tuple[int, int]]]:
    """Pastes the masks a few at a time and yields each one cut to its extent, in order.

    box_masks (Tensor[D, 1, M, M] or Tensor[D, M, M]): mask probabilities inside each box (the
    model's ``box_masks``); boxes (Tensor[D, 4]): x1, y1, x2, y2 in the pixels of an image of
    ``image_size`` (H, W); threshold (float >= 0); paste_masks: the paste op
    (``model.transform.paste_masks``; default :func:`maskrcnn_fast.ops.paste_masks`), called
    with its ``threshold`` on at most ``max_bytes`` of uint8 planes at once (one plane at least).

    Yields, per detection, ``(crop, (y0, x0))``: crop bool Tensor[h, w] on the CPU, the rows
    and columns of ``paste_masks(box_masks, boxes, image_size) > threshold`` that hold its
    pixels (0 x 0 for an empty mask), its top-left pixel at (y0, x0) of the image; the pixels
    are exactly those of the full-size paste, and no D x H x W tensor is ever made.
    """
    if box_masks.dim() == 3:
        box_masks = box_masks[:, None]
    if box_masks.dim() != 4 or box_masks.shape[1] != 1:
        raise ValueError(f"box_masks must be Tensor[D, 1, M, M] or Tensor[D, M, M], got {tuple(box_masks.shape)}")
    if boxes.dim() != 2 or boxes.shape != (box_masks.shape[0], 4):
        raise ValueError(f"boxes must be Tensor[{box_masks.shape[0]}, 4] (one per mask), got {tuple(boxes.shape)}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    paste = _ops.paste_masks if paste_masks is None else paste_masks
    h, w = (int(v) for v in image_size)
    d = box_masks.shape[0]
    empty = torch.zeros(0, 0, dtype=torch.bool)
    if h <= 0 or w <= 0:
        for _ in range(d):
            yield empty, (0, 0)
        return
    per = max(1, int(max_bytes) // (h * w))
    for start in range(0, d, per):
        planes = paste(box_masks[start : start + per], boxes[start : start + per], (h, w), threshold=threshold)[:, 0]
        rows, cols = planes.amax(2), planes.amax(1)  # [c, H], [c, W] of 0/1 (amax: faster than any)
        bounds = torch.stack(
            [rows.argmax(1), h - rows.flip(1).argmax(1), cols.argmax(1), w - cols.flip(1).argmax(1), rows.amax(1)], 1
        ).tolist()
        for i, (y0, y1, x0, x1, any_pixel) in enumerate(bounds):
            if not any_pixel:
                yield empty, (0, 0)
            else:
                # .bool() copies: the crop does not hold the plane
                yield planes[i, y0:y1, x0:x1].bool().cpu(), (y0, x0)
        del planes, rows, cols
