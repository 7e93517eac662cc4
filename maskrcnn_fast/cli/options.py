"""The options several commands share, and the checks made on them before any work.

Everything that can be checked before the work is: the options' values (errors name the
option), the output folders and files, the weights' names.
"""
import ast
import os
import tempfile

from ..models.builders import DEFAULT_WIDTHS, model_from_checkpoint
from ..weights import check_weights_spec
from .datasets import SHAPE_RULES
from .errors import UsageError, need, usage_errors

__all__ = ["AP_HELP", "AP_RULE", "DATA_RULES", "DETECTION_RULES", "MODEL_RULES", "WEIGHT_NAMES", "add_data_args",
           "add_detection_args", "add_model_args", "add_shape_args", "check_file", "check_folder", "check_numbers",
           "device", "model_from_args", "model_kwargs", "parse_model_arg", "weights_arg"]

WEIGHT_NAMES = "DEFAULT, COCO_V1 or MaskRCNN_ResNet50_FPN_Weights.COCO_V1"
AP_HELP = "exit status 1 when the mask AP50 is below X, in [0, 1] as the table prints it"


# ---- arguments -----------------------------------------------------------------------------------
def add_data_args(p, train: bool) -> None:
    p.add_argument("--dataset", default="synthetic", help="synthetic (default) or coco")
    p.add_argument("--data-path", help="coco: the image folder")
    p.add_argument("--ann-file", help="coco: the instances JSON")
    p.add_argument("--num-images", type=int, help="synthetic: images (default 200 to train, 50 to evaluate)")
    p.add_argument("--image-size", type=int, help="synthetic: square image side (default 128)")
    p.add_argument("--data-seed", type=int, help="synthetic: data set seed (default 0 to train, 1 to evaluate)")
    add_shape_args(p)
    if train:
        p.add_argument("--val-num-images", type=int, help="synthetic, --eval-at-end: held-out images (default 50)")
        p.add_argument("--val-data-seed", type=int, help="synthetic, --eval-at-end: held-out seed (default --data-seed + 1)")
        p.add_argument("--val-data-path", help="coco, --eval-at-end: the validation image folder")
        p.add_argument("--val-ann-file", help="coco, --eval-at-end: the validation instances JSON")


def add_shape_args(p) -> None:
    """synthetic: the shapes per image and their size (dense scenes: many small shapes)."""
    p.add_argument("--min-shapes", type=int, metavar="N", help="synthetic: least shapes per image (default 1)")
    p.add_argument("--max-shapes", type=int, metavar="N",
                   help="synthetic: most shapes per image (default 4, or --min-shapes where larger)")
    p.add_argument("--size-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="synthetic: shape half-extent as fractions of the image side (default 0.1 0.25; "
                        "dense scenes, e.g. --min-shapes 500 --max-shapes 3000 --size-range 0.005 0.015 "
                        "--image-size 1024)")


def add_detection_args(p) -> None:
    """eval, predict: how many detections the model keeps per image."""
    p.add_argument("--detections-per-img", type=int, metavar="N",
                   help="the most detections kept per image (the model's box_detections_per_img; default: the "
                        "checkpoint's, 100 for torchvision's); thousands work, masks are pasted a few at a time. "
                        "Each proposal gives at most one detection per class: raise --model-arg "
                        "rpn_post_nms_top_n_test=N (and rpn_pre_nms_top_n_test) with it for dense scenes")


def add_model_args(p, train: bool) -> None:
    if train:
        p.add_argument("--min-size", type=int, help="shorter image side after resizing (default 800)")
        p.add_argument("--max-size", type=int, help="longest side limit (default 1333)")
    else:
        p.add_argument("--min-size", type=int,
                       help="shorter image side after resizing (default: the checkpoint's; 800 for torchvision's)")
        p.add_argument("--max-size", type=int,
                       help="longest side limit (default: the checkpoint's; 1333 for torchvision's)")
    if train:
        p.add_argument("--anchor-sizes", type=int, nargs=5, metavar="S", help="anchor size per FPN level (default 32 64 128 256 512)")
        p.add_argument("--aspect-ratios", type=float, nargs="+", metavar="R", help="anchor aspect ratios (default 0.5 1 2)")
        p.add_argument("--fpn-channels", type=int, help="FPN width (default 256)")
        p.add_argument("--box-head-width", type=int, help="box head MLP width (default 1024)")
        p.add_argument("--mask-head-width", type=int, help="mask head convolution width (default 256)")
    p.add_argument("--weights", metavar="W",
                   help=(f"start from a whole model: a checkpoint file or torchvision's {WEIGHT_NAMES} "
                         "(torch hub's cache, else downloaded); the class-dependent layers start fresh when the "
                         "data set has other classes") if train else
                   f"the model: a checkpoint file (as --checkpoint) or torchvision's {WEIGHT_NAMES}")
    p.add_argument("--weights-backbone", metavar="W",
                   help="start the ResNet from a file or torchvision's weights name, e.g. "
                        "ResNet50_Weights.IMAGENET1K_V1 (torchvision's COCO recipe) or IMAGENET1K_V1" if train else
                   "(train only: a backbone alone has untrained heads)")
    p.add_argument("--frozen-bn-eps", type=float, metavar="EPS",
                   help="eps of the pretrained backbone's frozen batch norms (default: what the weights say: "
                        "0 for torchvision's COCO_V1 file under any name and for models trained from it, else 1e-5)")
    if train:
        p.add_argument("--trainable-backbone-layers", type=int, metavar="N",
                       help="with --weights or --weights-backbone: ResNet layers trained, from the top (default 3)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="any MaskRCNN keyword, e.g. rpn_batch_size_per_image=64 (repeatable)")
    p.add_argument("--ops", default="fused", choices=["fused", "torch"], help="our kernels or plain PyTorch")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="intra-op CPU threads (default: torch's; 1 is best on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# ---- checks before the work ----------------------------------------------------------------------
def check_numbers(args, rules) -> None:
    """rules: (option, test, what it must be); options left unset are not checked."""
    for option, test, must in rules:
        v = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if v is None:
            continue
        for item in v if isinstance(v, list) else [v]:
            need(test(item), f"{option} must be {must}, got {item:g}" if isinstance(item, float)
                 else f"{option} must be {must}, got {item}")


MODEL_RULES = [("--min-size", lambda v: v >= 1, ">= 1"), ("--max-size", lambda v: v >= 1, ">= 1"),
               ("--frozen-bn-eps", lambda v: v >= 0, ">= 0")]
DATA_RULES = [("--num-images", lambda v: v >= 1, ">= 1"), ("--val-num-images", lambda v: v >= 1, ">= 1"),
              ("--image-size", lambda v: v >= 8, ">= 8")] + SHAPE_RULES
DETECTION_RULES = [("--detections-per-img", lambda v: v >= 1, ">= 1")]
AP_RULE = [("--min-mask-ap50", lambda v: 0 <= v <= 1, "in [0, 1] (AP as the table prints it)")]


def check_folder(path: str, option: str, files=()) -> None:
    """Makes the output folder, or fails naming the option when it cannot hold the outputs."""
    need(not (os.path.exists(path) and not os.path.isdir(path)), f"{option} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
    for name in files:
        need(not os.path.isdir(os.path.join(path, name)),
             f"{option} {path}: {name} there is a folder, and the run writes a file of that name")


def check_file(path: str, option: str) -> None:
    """The output file's folder exists (made here) and takes files; the file is not a folder."""
    need(not os.path.isdir(path), f"{option} {path} is a folder, not a file")
    check_folder(os.path.dirname(os.path.abspath(path)), f"{option} {path}: its folder")
    need(not os.path.exists(path) or os.access(path, os.W_OK), f"{option} {path}: not writable")


def device(name: str, local_rank: int = 0) -> str:
    """--device: auto, cpu, cuda or cuda:N (cuda: the local rank's)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        need(torch.cuda.is_available(), f"--device {name}: no CUDA device is available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    elif name != "cpu":
        raise UsageError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return name


# ---- model ---------------------------------------------------------------------------------------
def parse_model_arg(text: str):
    """--model-arg key=value: the value as a Python literal, else as a string."""
    need("=" in text, f"--model-arg expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def model_kwargs(args) -> dict:
    """The model keywords the options give (what checkpoints keep in model_args["kwargs"])."""
    kw = {}
    for name in ("min_size", "max_size"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    if getattr(args, "detections_per_img", None) is not None:
        kw["box_detections_per_img"] = args.detections_per_img
    if getattr(args, "anchor_sizes", None):
        kw["anchor_sizes"] = tuple(args.anchor_sizes)
    if getattr(args, "aspect_ratios", None):
        kw["aspect_ratios"] = tuple(args.aspect_ratios)
    for name in DEFAULT_WIDTHS:
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    for item in getattr(args, "model_arg", None) or []:
        k, v = parse_model_arg(item)
        kw[k] = v
    return kw


def weights_arg(args) -> tuple:
    """eval, predict, export: (what to load, the option that named it)."""
    need(not args.weights_backbone, "--weights-backbone: a backbone alone has untrained heads, nothing to "
         "evaluate or predict with; give --weights or --checkpoint (a whole model)")
    need(not (args.checkpoint and args.weights), "--checkpoint and --weights name the same thing: give one")
    need(bool(args.checkpoint or args.weights),
         "--checkpoint or --weights is required: a checkpoint file, or torchvision's weights name (COCO_V1)")
    spec, option = (args.checkpoint, "--checkpoint") if args.checkpoint else (args.weights, "--weights")
    with usage_errors():
        check_weights_spec(spec, option)
    return spec, option


def model_from_args(args, spec: str, option: str, num_classes=None, checkpoint=None):
    """eval, predict, export: -> (model in eval mode, model_args) for the weights ``spec`` named
    by ``option``, with the model options applied."""
    with usage_errors(type_prefix="bad --model-arg: "):
        return model_from_checkpoint(spec, num_classes=num_classes, ops=args.ops, overrides=model_kwargs(args),
                                     frozen_bn_eps=args.frozen_bn_eps, option=option, checkpoint=checkpoint)
