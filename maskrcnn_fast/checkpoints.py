"""Models from checkpoints and weight names, as the command line takes them.

A weights argument is a file (our checkpoint, a torchvision reference-script checkpoint or a
plain state_dict) or a torchvision weights name (``DEFAULT``, ``COCO_V1``,
``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``; for a backbone ``IMAGENET1K_V1``,
``ResNet50_Weights.IMAGENET1K_V1``), loaded from torch hub's cache or downloaded into it.
Checkpoints hold how to rebuild their model (depth, classes, keyword arguments), so a file is
all eval and predict need. Bad arguments raise :class:`UsageError` naming the option.
"""
import ast
import os
from typing import List, Optional

__all__ = ["UsageError", "backbone_state", "build_model", "check_weights_spec", "checkpoint_eps", "infer_depth",
           "load_into", "model_from_checkpoint", "read_weights"]


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def parse_model_arg(text: str):
    if "=" not in text:
        raise UsageError(f"--model-arg expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def infer_depth(state) -> int:
    """ResNet depth of a Mask R-CNN state_dict, from the blocks in layer3 and their kind."""
    blocks = {k.split(".")[3] for k in state if k.startswith("backbone.body.layer3.")}
    bottleneck = any(k.startswith("backbone.body.layer1.0.conv3.") for k in state)
    table = {(True, 6): 50, (True, 23): 101, (True, 36): 152, (False, 2): 18, (False, 6): 34}
    depth = table.get((bottleneck, len(blocks)))
    if depth is None:
        raise UsageError("cannot tell the ResNet depth of this state_dict (is it a Mask R-CNN checkpoint?)")
    return depth


DEFAULT_WIDTHS = {"fpn_channels": 256, "box_head_width": 1024, "mask_head_width": 256}


def build_model(model_args: dict, ops: str = "fused", weights=None, weights_backbone=None):
    """A Mask R-CNN from ``{"depth", "num_classes", "kwargs"}`` (what checkpoints store).
    kwargs may hold ``anchor_sizes`` (one size per FPN level), ``aspect_ratios``, and the
    widths ``fpn_channels`` (default 256), ``box_head_width`` (TwoMLPHead's representation
    size, default 1024) and ``mask_head_width`` (the mask head's convolutions and the
    predictor's dim_reduced, default 256); the rest go to the builder (frozen_batch_norm,
    trainable_backbone_layers, frozen_bn_eps) and the model. weights: a state_dict;
    weights_backbone: a ResNet state_dict."""
    from .models import (FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, RPNHead, TwoMLPHead, get_ops,
                         maskrcnn_resnet_fpn)

    kwargs = dict(model_args.get("kwargs") or {})
    widths = {k: kwargs.pop(k, None) for k in DEFAULT_WIDTHS}
    for k, v in widths.items():
        if v is not None and (not isinstance(v, int) or v < 1):
            raise UsageError(f"--{k.replace('_', '-')} must be a positive integer, got {v!r}")
        widths[k] = DEFAULT_WIDTHS[k] if v is None else v
    c = widths["fpn_channels"]
    kwargs["fpn_channels"] = c
    sizes = kwargs.pop("anchor_sizes", None)
    ratios = kwargs.pop("aspect_ratios", None)
    if sizes is not None or ratios is not None:
        sizes = tuple(int(s) for s in (sizes or (32, 64, 128, 256, 512)))
        if len(sizes) != 5:
            raise UsageError(f"--anchor-sizes: one per FPN level (5), got {len(sizes)}")
        ratios = tuple(float(r) for r in (ratios or (0.5, 1.0, 2.0)))
        kwargs["rpn_anchor_generator"] = get_ops(ops).AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * 5)
        kwargs["rpn_head"] = RPNHead(c, len(ratios))
    num_classes = int(model_args["num_classes"])
    box_w, mask_w = widths["box_head_width"], widths["mask_head_width"]
    if (box_w, mask_w) != (DEFAULT_WIDTHS["box_head_width"], DEFAULT_WIDTHS["mask_head_width"]):
        # other head widths: the heads are built here, so the predictors fix the class count
        kwargs.update(box_head=TwoMLPHead(c * 7 * 7, box_w), box_predictor=FastRCNNPredictor(box_w, num_classes),
                      mask_head=MaskRCNNHeads(c, (mask_w,) * 4, 1),
                      mask_predictor=MaskRCNNPredictor(mask_w, mask_w, num_classes))
        num_classes = None
    try:
        return maskrcnn_resnet_fpn(int(model_args["depth"]), num_classes=num_classes, weights=weights,
                                   weights_backbone=weights_backbone, ops=ops, **kwargs)
    except TypeError as e:  # an unknown --model-arg
        raise UsageError(f"bad --model-arg: {e}") from None
    except RuntimeError as e:  # load_state_dict: missing or misshapen tensors
        raise UsageError(f"the weights do not fit the model: {str(e).splitlines()[0]}") from None


def _coco_names() -> Optional[List[str]]:
    try:
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

        return list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    except Exception:  # noqa: BLE001  names are a nicety
        return None


def _is_name(spec: str) -> bool:
    # DEFAULT, COCO_V1, ResNet50_Weights.IMAGENET1K_V1: never a path
    return bool(spec) and all(part.isidentifier() for part in spec.split(".")) and not spec.endswith(
        (".pt", ".pth", ".ckpt", ".bin"))


def check_weights_spec(spec: str, option: str, kind: str = "maskrcnn", depth: int = 50) -> None:
    """Fails, naming the option, on a weights name torchvision does not have, before anything
    is loaded or downloaded (a missing file is reported when it is read)."""
    from .models import builders

    if os.path.exists(spec) or not _is_name(spec):
        return
    try:
        builders.weights_enum(spec, kind, depth)
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None


def read_weights(spec: str, option: str = "--checkpoint") -> dict:
    """A checkpoint dict for a file or a torchvision Mask R-CNN weights name: ``{"model":
    state_dict, ...}``; a name gives ``model_args`` (ResNet-50, COCO's classes, eps 0 for
    COCO_V1) and ``_path`` None. Errors name ``option``."""
    from .engine import load_checkpoint
    from .models import builders

    if os.path.exists(spec):
        try:
            ck = load_checkpoint(spec)
        except Exception as e:  # noqa: BLE001  a torn or foreign file
            raise UsageError(f"{option}: cannot read checkpoint {spec}: {str(e).splitlines()[0]}") from None
        if not isinstance(ck, dict):
            raise UsageError(f"{option}: {spec} does not hold a state_dict")
        if not isinstance(ck.get("model"), dict):
            ck = {"model": ck}
        ck["_path"] = os.path.join(spec, "checkpoint.pt") if os.path.isdir(spec) else spec
        return ck
    if not _is_name(spec):
        raise UsageError(f"{option}: checkpoint not found: {spec}")
    try:
        w = builders.weights_enum(spec, "maskrcnn")
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights as W

    kwargs = {"frozen_bn_eps": 0.0} if w == W.COCO_V1 else {}
    return {"model": builders.fetch_state_dict(w), "_path": None,
            "model_args": {"depth": 50, "classes": list(w.meta["categories"]), "kwargs": kwargs}}


def backbone_state(spec: str, depth: int, option: str = "--weights-backbone"):
    """A ResNet state_dict from a file or a torchvision ResNet weights name."""
    from .models import builders

    if os.path.exists(spec):
        try:
            return builders._load_file(spec)
        except Exception as e:  # noqa: BLE001
            raise UsageError(f"{option}: cannot read {spec}: {str(e).splitlines()[0]}") from None
    if not _is_name(spec):
        raise UsageError(f"{option}: file not found: {spec}")
    try:
        w = builders.weights_enum(spec, "resnet", depth)
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None
    return builders.fetch_state_dict(w)


def checkpoint_eps(ck: dict, explicit: Optional[float] = None) -> Optional[float]:
    """The frozen batch norms' eps for a :func:`read_weights` dict: ``explicit`` (the option)
    when given, else what the checkpoint's content says (never its file name)."""
    from .models.builders import frozen_bn_eps_of

    if explicit is not None:
        return float(explicit)
    kw = (ck.get("model_args") or {}).get("kwargs") or {}
    if kw.get("frozen_bn_eps") is not None:
        return float(kw["frozen_bn_eps"])
    return frozen_bn_eps_of(ck.get("_path"), ck)


def model_from_checkpoint(path: str, num_classes: Optional[int] = None, ops: str = "fused",
                          overrides: Optional[dict] = None, frozen_bn_eps: Optional[float] = None,
                          option: str = "--checkpoint", checkpoint: Optional[dict] = None):
    """-> (model in eval mode, model_args). ``path``: our checkpoint, a torchvision reference
    checkpoint, a plain state_dict (.pth) or a torchvision weights name (COCO_V1, DEFAULT).
    num_classes: what the caller needs (an error when the checkpoint has another count).
    overrides: model kwargs to change (min_size, ...). frozen_bn_eps: the frozen batch norms'
    eps (default: what the checkpoint says, see :func:`checkpoint_eps`)."""
    ck = checkpoint if checkpoint is not None else read_weights(path, option)
    state = ck["model"]
    if "roi_heads.box_predictor.cls_score.weight" not in state:
        raise UsageError(f"{option}: {path} is not a Mask R-CNN checkpoint (no roi_heads.box_predictor)")
    have = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    if num_classes is not None and num_classes != have:
        raise UsageError(f"the checkpoint {path} has {have} classes (background included), "
                         f"but {num_classes} were asked for")
    model_args = dict(ck.get("model_args") or {})
    model_args.setdefault("depth", infer_depth(state))
    model_args["num_classes"] = have
    model_args["kwargs"] = {**(model_args.get("kwargs") or {}), **(overrides or {})}
    eps = checkpoint_eps(ck, frozen_bn_eps)
    if eps is not None:
        model_args["kwargs"]["frozen_bn_eps"] = eps
    if not model_args.get("classes"):
        model_args["classes"] = _coco_names() if have == 91 else None
    model = build_model(model_args, ops=ops, weights=state)
    return model.eval(), model_args


# the layers whose shape follows the class count: fine-tuning on other classes starts them afresh
_CLASS_LAYERS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def load_into(model, state, option: str = "--weights") -> List[str]:
    """Loads a Mask R-CNN state_dict into ``model`` for fine-tuning: every tensor must fit,
    except the class-dependent predictor layers when the class counts differ (they keep their
    fresh initialisation). -> the keys left out."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise UsageError(f"{option}: the weights lack {len(missing)} of the model's tensors, e.g. {missing[0]} "
                         f"(another depth or layout?)")
    fit, skipped = {}, []
    for k, v in state.items():
        if k not in own:
            continue
        if tuple(v.shape) == tuple(own[k].shape):
            fit[k] = v
        elif k.startswith(_CLASS_LAYERS):
            skipped.append(k)
        else:
            raise UsageError(f"{option}: {k} has shape {tuple(v.shape)}, the model's is {tuple(own[k].shape)}")
    model.load_state_dict(fit, strict=False)
    return skipped
