"""The deployable forward of Mask R-CNN for one image size, and its torch.export program.

:class:`DeployModel` takes a float batch Tensor[N, 3, H, W] of one fixed size and returns padded
detections with per-image counts: static shapes, no host synchronisation, every maskrcnn_fast op
kept as one ``torch.ops.maskrcnn_fast`` call, and nothing that depends on N except tensor
shapes, so the batch size may stay symbolic in the exported program.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DeployModel", "export", "check_model", "to_detections", "OUTPUT_NAMES", "MASK_MODES"]

MASK_MODES = ("pasted", "logits", "none")
# the order of the outputs of DeployModel.forward (and of the ONNX graph, the .pt2 package)
OUTPUT_NAMES = ("boxes", "labels", "scores", "masks", "counts")


def _parse_size(image_size) -> Tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    try:
        h, w = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {(h, w)}")
    return h, w


def check_model(model: nn.Module) -> torch.device:
    """Raises, saying what to do, for a model that cannot be exported; returns its device."""
    from ..models.mask_rcnn import MaskRCNN

    if not isinstance(model, MaskRCNN):
        raise TypeError(f"model must be a maskrcnn_fast MaskRCNN, got {type(model).__name__}")
    if model.training:
        raise RuntimeError("model is in training mode: export the inference model, call model.eval() first")
    if model.ops.name != "fused":
        raise ValueError(
            f"model runs on ops={model.ops.name!r}, whose NMS has data-dependent shapes: "
            f"build it with ops='fused' to export it"
        )
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError("model has no parameters")
    return p.device


class DeployModel(nn.Module):
    """A MaskRCNN's inference for images of exactly ``image_size``, with static shapes.

    Args:
        model (MaskRCNN): in eval mode, on the fused ops; shared, not copied. Its poolers'
            scales must be set (one eager forward at this size sets them: :func:`export` does).
        image_size ((H, W)): the one input size it accepts.
        masks (str): "pasted" (probabilities pasted into the image, Tensor[N, D, H, W]),
            "logits" (the detected class's 28x28 mask logits, Tensor[N, D, M, M], to be pasted
            with the boxes by the caller) or "none".

    forward(images: float Tensor[N, 3, H, W] in [0, 1]) -> (boxes Tensor[N, D, 4] (x1, y1, x2,
    y2 in input pixels), labels int64 Tensor[N, D], scores Tensor[N, D], masks (see above; an
    empty Tensor[N, D, 0, 0] for "none") and counts int64 Tensor[N]); D = the model's
    ``box_detections_per_img``. Rows from counts[i] on are padding: zero boxes, labels and
    scores, meaningless masks.
    """

    def __init__(self, model: nn.Module, image_size: Sequence[int], masks: str = "pasted"):
        super().__init__()
        check_model(model)
        if masks not in MASK_MODES:
            raise ValueError(f"masks must be one of {MASK_MODES}, got {masks!r}")
        if masks != "none" and not model.roi_heads.has_mask():
            raise ValueError("masks: the model has no mask head; use masks='none'")
        for name, pool in (("box_roi_pool", model.roi_heads.box_roi_pool),
                           ("mask_roi_pool", getattr(model.roi_heads, "mask_roi_pool", None))):
            if pool is not None and getattr(pool, "scales", ()) is None:
                raise RuntimeError(f"roi_heads.{name}.scales is not set: run the model once on an image first")
        self.model = model
        self.image_size = _parse_size(image_size)
        self.masks = masks
        h, w = self.image_size
        t = model.transform
        # the transform's own size arithmetic, on a stand-in image: the resized and padded sizes
        dev = next(model.parameters()).device
        with torch.no_grad():
            resized, _ = t.resize(torch.zeros(1, h, w, device=dev))
            self.resized = (int(resized.shape[-2]), int(resized.shape[-1]))
            self.padded = tuple(t.batch_images([resized]).shape[-2:])
            sizes, ratios = model.static_constants([self.resized], [self.image_size], dev)
        self.register_buffer("mean", torch.tensor(t.image_mean, device=dev).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(t.image_std, device=dev).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("sizes", sizes, persistent=False)  # [1, 2] resized (h, w)
        self.register_buffer("ratios", ratios, persistent=False)  # [1, 4] back to input pixels
        self.register_buffer(
            "out_sizes", torch.tensor([[h, w]], dtype=torch.int64, device=dev), persistent=False
        )

    def _pool(self, pool: nn.Module, features: Dict[str, Tensor], boxes: Tensor) -> Tensor:
        """boxes Tensor[N, K, 4] -> pooled Tensor[N * K, C, S, S], rows image-major."""
        from ..ops import multilevel_roi_align

        n, k = boxes.shape[0], boxes.shape[1]
        # the image index of each row from the shapes alone: no per-image Python loop, so the
        # batch size stays symbolic
        index = torch.arange(n, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)
        rois = torch.cat([index[:, None], boxes.reshape(-1, 4)], 1)
        maps = [v for name, v in features.items() if name in pool.featmap_names]
        return multilevel_roi_align(maps, rois, pool.output_size, pool.scales, pool.sampling_ratio, False,
                                    pool.canonical_scale, pool.canonical_level)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        m = self.model
        heads = m.roi_heads
        n = images.shape[0]
        # the model's transform, batched: same normalisation, the same bilinear resize (an
        # explicit size is what recompute_scale_factor=True resolves to), zero padding
        x = (images - self.mean) / self.std
        if self.resized != self.image_size:
            x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False)
        ph, pw = self.padded
        if (ph, pw) != self.resized:
            x = F.pad(x, (0, pw - self.resized[1], 0, ph - self.resized[0]))
        features = m.backbone(x)
        feats = list(features.values())
        sizes = self.sizes.expand(n, 2)
        logits, deltas = m.rpn.head(feats)
        from ..models.transform import ImageList

        proposals, _, proposal_counts = m.rpn.filter_proposals(logits, deltas, ImageList(x, []), feats, sizes)
        box_features = self._pool(heads.box_roi_pool, features, proposals)
        class_logits, box_regression = heads.box_predictor(heads.box_head(box_features))
        boxes, scores, labels, counts = heads.postprocess_detections(
            class_logits, box_regression, proposals, proposal_counts, [], sizes
        )
        d = boxes.shape[1]
        out_boxes = (boxes * self.ratios[:, None, :].to(boxes.dtype)).to(boxes.dtype)
        if self.masks == "none":
            return out_boxes, labels, scores, boxes.new_zeros((n, d, 0, 0)), counts
        mask_logits = heads.mask_predictor(heads.mask_head(self._pool(heads.mask_roi_pool, features, boxes)))
        flat = labels.reshape(-1)  # padding rows have label 0: a valid index, meaningless result
        picked = mask_logits[torch.arange(flat.shape[0], device=flat.device), flat]  # [N * D, M, M]
        if self.masks == "logits":
            return out_boxes, labels, scores, picked.reshape(n, d, *picked.shape[-2:]), counts
        h, w = self.image_size
        index = torch.arange(n, device=flat.device).repeat_interleave(d)
        pasted = torch.ops.maskrcnn_fast.paste_masks(
            picked.sigmoid(), out_boxes.reshape(-1, 4), index, self.out_sizes.expand(n, 2), h, w, 1, None
        )
        return out_boxes, labels, scores, pasted.reshape(n, d, h, w), counts


def _example(example_images, image_size, batch, device) -> Tensor:
    if example_images is None:
        if image_size is None:
            raise ValueError("give example_images or image_size")
        h, w = _parse_size(image_size)
        g = torch.Generator().manual_seed(0)
        return torch.rand(batch or 1, 3, h, w, generator=g).to(device)
    if isinstance(example_images, (list, tuple)):
        if not example_images or not all(isinstance(i, Tensor) for i in example_images):
            raise TypeError("example_images must be a Tensor[N, 3, H, W] or a non-empty list of Tensor[3, H, W]")
        shapes = {tuple(i.shape) for i in example_images}
        if len(shapes) != 1:
            raise ValueError(f"example_images must all have one size (the export's), got {sorted(shapes)}")
        example_images = torch.stack(list(example_images))
    if not isinstance(example_images, Tensor) or example_images.dim() != 4 or example_images.shape[1] != 3:
        shape = tuple(example_images.shape) if isinstance(example_images, Tensor) else type(example_images).__name__
        raise ValueError(f"example_images must be a float Tensor[N, 3, H, W], got {shape}")
    if not example_images.is_floating_point():
        raise TypeError(f"example_images must be floating point (values in [0, 1]), got {example_images.dtype}")
    if example_images.device != device:
        raise ValueError(
            f"example_images are on {example_images.device} but the model is on {device}: move one of them "
            f"(model.to(device) or images.to(device)) so both are on the device to export for"
        )
    if image_size is not None and tuple(example_images.shape[-2:]) != _parse_size(image_size):
        raise ValueError(f"image_size {tuple(image_size)} differs from the example images' {tuple(example_images.shape[-2:])}")
    return example_images


def export(
    model: nn.Module,
    example_images=None,
    *,
    image_size: Optional[Sequence[int]] = None,
    masks: str = "pasted",
    dynamic_batch: bool = True,
    strict: bool = False,
) -> "torch.export.ExportedProgram":
    """torch.export of ``model``'s static-shape inference for one image size.

    Args:
        model (MaskRCNN): in eval mode, on the fused ops (optimize_for_inference's copy too).
        example_images (Tensor[N, 3, H, W] or list of N Tensor[3, H, W] of one size): float,
            on the model's device; their size is the one the program accepts. None: random
            images of ``image_size``.
        image_size ((H, W)): needed without example_images.
        masks (str): "pasted", "logits" or "none" (see :class:`DeployModel`).
        dynamic_batch (bool): the batch size is a symbolic dimension (1 to 64), else the
            example's.

    Returns:
        torch.export.ExportedProgram: ``program.module()(images)`` -> (boxes [N, D, 4], labels
        [N, D], scores [N, D], masks, counts [N]) as :class:`DeployModel`. No graph break,
        no data-dependent shape; the maskrcnn_fast ops stay ``torch.ops.maskrcnn_fast`` calls.

    Raises:
        RuntimeError: the model is in training mode. ValueError: images on another device than
        the model, of mixed sizes, or a model on the "torch" ops.
    """
    device = check_model(model)
    images = _example(example_images, image_size, None, device)
    with torch.no_grad():
        deploy, images, dynamic_shapes = prepare_export(model, images, masks, dynamic_batch)
        return torch.export.export(deploy, (images,), dynamic_shapes=dynamic_shapes, strict=strict)


def prepare_export(model: nn.Module, images: Tensor, masks: str, dynamic_batch: bool):
    """-> (DeployModel, example images, dynamic_shapes) for torch.export and the ONNX exporter,
    under no_grad. ``images``: Tensor[N, 3, H, W] on the model's device."""
    model(list(images))  # the poolers' scales are set on the first forward, as torchvision does
    deploy = DeployModel(model, images.shape[-2:], masks=masks).eval()
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {"images": {0: torch.export.Dim("batch", min=1, max=64)}}
        if images.shape[0] == 1:
            # export specialises a size-1 example; a size-2 example keeps the batch symbolic
            images = images.expand(2, -1, -1, -1).contiguous()
    return deploy, images, dynamic_shapes


def check_image_size(shape, image_size: Tuple[int, int], path: str) -> None:
    """Raises ValueError, saying what to do, when images of ``shape`` [N, 3, H, W] are not the
    ``image_size`` the file at ``path`` was exported for."""
    if tuple(shape[-2:]) != tuple(image_size):
        h, w = image_size
        raise ValueError(
            f"images are {shape[-2]}x{shape[-1]} but {path} was exported for {h}x{w}: "
            f"resize them to {h}x{w} or export again with --size {shape[-2]}x{shape[-1]}"
        )


def to_detections(outputs: Sequence[Tensor], masks: str = "pasted") -> List[Dict[str, Tensor]]:
    """The padded outputs (boxes, labels, scores, masks, counts) of an exported program, a .pt2
    package or an ONNX session (tensors or numpy arrays) -> torchvision's list of dicts of exact
    sizes; masks: the export's mode, "pasted" gives masks [K, 1, H, W] (torchvision's),
    "logits" [K, M, M], "none" no masks."""
    if masks not in MASK_MODES:
        raise ValueError(f"masks must be one of {MASK_MODES}, got {masks!r}")
    boxes, labels, scores, mask_out, counts = (torch.as_tensor(o) for o in outputs)
    result = []
    for i, k in enumerate(counts.tolist()):
        r = {"boxes": boxes[i, :k], "labels": labels[i, :k], "scores": scores[i, :k]}
        if masks == "pasted":
            r["masks"] = mask_out[i, :k, None]
        elif masks == "logits":
            r["masks"] = mask_out[i, :k]
        result.append(r)
    return result
