"""``maskrcnn-fast`` / ``python -m maskrcnn_fast``: train, eval, predict, bench.

    maskrcnn-fast train --dataset synthetic --depth 18 --iterations 300 --output-dir runs/demo
    maskrcnn-fast train ... --optimizer adamw --lr-schedule cosine --fpn-channels 64 --threads 1  # make demo
    torchrun --nproc_per_node=8 -m maskrcnn_fast train --dataset coco --data-path train2017 \\
        --ann-file annotations/instances_train2017.json --epochs 26 --batch-size 2 --amp
    maskrcnn-fast eval --checkpoint runs/demo/checkpoint.pt --dataset synthetic
    maskrcnn-fast predict photos/ --checkpoint runs/demo/checkpoint.pt --output-dir out
    maskrcnn-fast bench [pytest args]

Checkpoints hold how to rebuild the model (depth, number of classes, class names, keyword
arguments), so eval and predict need no model flags. Bad arguments end with one line on stderr,
``maskrcnn-fast: error: ...``, and exit status 2 (1 when training fails, e.g. a NaN loss).
Reading COCO files, scoring (eval, train --eval-at-end) and predict's mask RLEs need pycocotools:
without it those commands stop at once with one line naming it, exit status 1.
"""
import argparse
import ast
import json
import os
import subprocess
import sys
from typing import List, Optional

from ._pycocotools import MissingPycocotools, pycocotools

__all__ = ["main", "build_model", "model_from_checkpoint", "UsageError"]

PROG = "maskrcnn-fast"
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(message)


# ---- model ---------------------------------------------------------------------------------------
def _parse_model_arg(text: str):
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


_DEFAULT_WIDTHS = {"fpn_channels": 256, "box_head_width": 1024, "mask_head_width": 256}


def build_model(model_args: dict, ops: str = "fused", weights=None):
    """A Mask R-CNN from ``{"depth", "num_classes", "kwargs"}`` (what checkpoints store).
    kwargs may hold ``anchor_sizes`` (one size per FPN level), ``aspect_ratios``, and the
    widths ``fpn_channels`` (default 256), ``box_head_width`` (TwoMLPHead's representation
    size, default 1024) and ``mask_head_width`` (the mask head's convolutions and the
    predictor's dim_reduced, default 256); the rest go to the model. weights: a state_dict."""
    from .models import (FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, RPNHead, TwoMLPHead, get_ops,
                         maskrcnn_resnet_fpn)

    kwargs = dict(model_args.get("kwargs") or {})
    widths = {k: kwargs.pop(k, None) for k in _DEFAULT_WIDTHS}
    for k, v in widths.items():
        if v is not None and (not isinstance(v, int) or v < 1):
            raise UsageError(f"{k.replace('_', '-')} must be a positive integer, got {v!r}")
        widths[k] = _DEFAULT_WIDTHS[k] if v is None else v
    c = widths["fpn_channels"]
    kwargs["fpn_channels"] = c
    sizes = kwargs.pop("anchor_sizes", None)
    ratios = kwargs.pop("aspect_ratios", None)
    if sizes is not None or ratios is not None:
        sizes = tuple(int(s) for s in (sizes or (32, 64, 128, 256, 512)))
        if len(sizes) != 5:
            raise UsageError(f"anchor sizes: one per FPN level (5), got {len(sizes)}")
        ratios = tuple(float(r) for r in (ratios or (0.5, 1.0, 2.0)))
        kwargs["rpn_anchor_generator"] = get_ops(ops).AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * 5)
        kwargs["rpn_head"] = RPNHead(c, len(ratios))
    num_classes = int(model_args["num_classes"])
    box_w, mask_w = widths["box_head_width"], widths["mask_head_width"]
    try:
        if (box_w, mask_w) == (_DEFAULT_WIDTHS["box_head_width"], _DEFAULT_WIDTHS["mask_head_width"]):
            return maskrcnn_resnet_fpn(int(model_args["depth"]), num_classes=num_classes,
                                       weights=weights, ops=ops, **kwargs)
        # other head widths: the heads are built here, so the predictors fix the class count
        heads = dict(box_head=TwoMLPHead(c * 7 * 7, box_w), box_predictor=FastRCNNPredictor(box_w, num_classes),
                     mask_head=MaskRCNNHeads(c, (mask_w,) * 4, 1),
                     mask_predictor=MaskRCNNPredictor(mask_w, mask_w, num_classes))
        model = maskrcnn_resnet_fpn(int(model_args["depth"]), weights=None, ops=ops, **kwargs, **heads)
    except TypeError as e:  # an unknown --model-arg
        raise UsageError(f"bad model argument: {e}") from None
    if weights is not None:
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise UsageError(f"the weights do not fit the model: {str(e).splitlines()[0]}") from None
    return model


def _read_checkpoint(path: str) -> dict:
    from .engine import load_checkpoint

    if not os.path.exists(path):
        raise UsageError(f"checkpoint not found: {path}")
    try:
        ck = load_checkpoint(path)
    except Exception as e:  # noqa: BLE001  a torn or foreign file
        raise UsageError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(ck, dict):
        raise UsageError(f"{path} does not hold a state_dict")
    return ck


def model_from_checkpoint(path: str, num_classes: Optional[int] = None, ops: str = "fused",
                          overrides: Optional[dict] = None):
    """-> (model in eval mode, model_args). ``path``: our checkpoint, a torchvision reference
    checkpoint or a plain state_dict (.pth). num_classes: what the caller needs (an error when
    the checkpoint has another count). overrides: model kwargs to change (min_size, ...)."""
    ck = _read_checkpoint(path)
    state = ck["model"] if isinstance(ck.get("model"), dict) else ck
    if "roi_heads.box_predictor.cls_score.weight" not in state:
        raise UsageError(f"{path} is not a Mask R-CNN checkpoint (no roi_heads.box_predictor)")
    have = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    if num_classes is not None and num_classes != have:
        raise UsageError(f"the checkpoint {path} has {have} classes (background included), "
                         f"but {num_classes} were asked for")
    model_args = dict(ck.get("model_args") or {})
    model_args.setdefault("depth", infer_depth(state))
    model_args["num_classes"] = have
    model_args["kwargs"] = {**(model_args.get("kwargs") or {}), **(overrides or {})}
    from .models.builders import _COCO_V1_FILE

    if os.path.basename(path) == _COCO_V1_FILE:  # torchvision's COCO_V1 file: eps 0, as the builder sets
        model_args["kwargs"].setdefault("frozen_bn_eps", 0.0)
    if not model_args.get("classes"):
        model_args["classes"] = _coco_names() if have == 91 else None
    model = build_model(model_args, ops=ops, weights=state)
    return model.eval(), model_args


def _coco_names() -> Optional[List[str]]:
    try:
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

        return list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    except Exception:  # noqa: BLE001  names are a nicety
        return None


def _model_kwargs(args) -> dict:
    kw = {}
    for name in ("min_size", "max_size"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    if getattr(args, "anchor_sizes", None):
        kw["anchor_sizes"] = tuple(args.anchor_sizes)
    if getattr(args, "aspect_ratios", None):
        kw["aspect_ratios"] = tuple(args.aspect_ratios)
    for name in _DEFAULT_WIDTHS:
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    for item in getattr(args, "model_arg", None) or []:
        k, v = _parse_model_arg(item)
        kw[k] = v
    return kw


# ---- data ----------------------------------------------------------------------------------------
def _require_pycocotools(what: str) -> None:
    """One line naming pycocotools before the long work (training, a pass over a data set), not
    after it, when a command will read, score or write COCO data without it."""
    pycocotools(what)


def _dataset(args, train: bool, image_size=None):
    """The training or evaluation data set named by the arguments."""
    if args.dataset == "synthetic":
        from .data import SyntheticShapes

        seed = args.data_seed if args.data_seed is not None else (0 if train else 1)
        n = args.num_images
        if not train and hasattr(args, "val_num_images"):  # train --eval-at-end: the held-out set
            n = args.val_num_images
            seed = args.val_data_seed if args.val_data_seed is not None else (args.data_seed or 0) + 1
        n = n if n is not None else (200 if train else 50)
        size = args.image_size or image_size or 128
        try:
            return SyntheticShapes(n, size, seed=seed)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.dataset == "coco":
        root, ann = args.data_path, args.ann_file
        if not train and getattr(args, "val_data_path", None):
            root, ann = args.val_data_path, args.val_ann_file
        if not root or not ann:
            raise UsageError("--dataset coco needs --data-path (image folder) and --ann-file (instances JSON)")
        if not os.path.isdir(root):
            raise UsageError(f"image folder not found: {root}")
        if not os.path.isfile(ann):
            raise UsageError(f"annotation file not found: {ann}")
        from .data import CocoDetection, Compose, RandomHorizontalFlip

        transforms = Compose([RandomHorizontalFlip(0.5)]) if train else None
        return CocoDetection(root, ann, transforms=transforms, remove_images_without_annotations=train)
    raise UsageError(f"unknown dataset {args.dataset!r} (choose synthetic or coco)")


def _device(name: str, local_rank: int = 0) -> str:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    elif name != "cpu":
        raise UsageError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return name


def _evaluate(model, dataset, device, args, output_json) -> dict:
    from .evaluation import evaluate, format_table

    results = evaluate(model, dataset, device, batch_size=args.batch_size, output_json=output_json,
                       progress=not args.no_progress)
    print(format_table(results))
    return results


def _check_min_ap(results: dict, args) -> int:
    """--min-mask-ap50: 1 (with one line on stderr) when the mask AP50 is below it, else 0."""
    need = getattr(args, "min_mask_ap50", None)
    if need is None:
        return 0
    got = (results.get("segm") or {}).get("AP50")
    if got is None or got < need:
        shown = "unavailable (no masks)" if got is None else f"{got:.3f}"
        print(f"{PROG}: error: mask AP50 {shown} is below --min-mask-ap50 {need:g}", file=sys.stderr)
        return 1
    print(f"mask AP50 {got:.3f} >= {need:g}: ok")
    return 0


# ---- subcommands ---------------------------------------------------------------------------------
def cmd_train(args) -> int:
    import torch

    from .engine import NonFiniteLossError, Trainer, init_distributed, seed_everything

    if args.resume and not os.path.exists(args.resume):
        raise UsageError(f"--resume: checkpoint not found: {args.resume}")
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = _device(args.device, local)
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {args.iterations}")
    if args.iterations is None and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if args.amp and not device.startswith("cuda"):
        raise UsageError("--amp needs a CUDA device")
    if args.lr_steps is not None and args.lr_schedule != "multistep":
        raise UsageError("--lr-steps applies to --lr-schedule multistep")
    if args.min_mask_ap50 is not None and not args.eval_at_end:
        raise UsageError("--min-mask-ap50 needs --eval-at-end")
    dataset = _dataset(args, train=True)  # CocoDetection names pycocotools when it is missing
    if args.eval_at_end:
        _require_pycocotools("train --eval-at-end")
    classes = list(getattr(dataset, "classes", []) or []) or None
    model_args = {"depth": args.depth, "num_classes": int(dataset.num_classes), "classes": classes,
                  "kwargs": _model_kwargs(args)}
    if args.resume:
        ck = _read_checkpoint(args.resume)
        old = (ck.get("model_args") or {}).get("num_classes")
        if old is not None and old != model_args["num_classes"]:
            raise UsageError(f"--resume: the checkpoint has {old} classes but the data set has "
                             f"{model_args['num_classes']}")
        if (ck.get("model_args") or {}).get("depth", args.depth) != args.depth:
            raise UsageError(f"--resume: the checkpoint is ResNet-{ck['model_args']['depth']}, not --depth {args.depth}")
        old_kw = (ck.get("model_args") or {}).get("kwargs") or {}
        for k, default in _DEFAULT_WIDTHS.items():
            theirs, mine = old_kw.get(k, default), model_args["kwargs"].get(k, default)
            if theirs != mine:
                raise UsageError(f"--resume: the checkpoint has {k.replace('_', '-')} {theirs}, not {mine}")
        del ck
    info = init_distributed(device)
    seed_everything(args.seed)  # the initial weights (DistributedDataParallel copies rank 0's)
    model = build_model(model_args, ops=args.ops)
    group_ids = None
    if args.aspect_ratio_group_factor >= 0:
        from .data import create_aspect_ratio_groups

        group_ids = create_aspect_ratio_groups(dataset, k=args.aspect_ratio_group_factor)
    total = args.iterations if args.iterations is not None else args.epochs
    lr_steps = args.lr_steps if args.lr_steps is not None else [round(total * 16 / 26), round(total * 22 / 26)]
    out = args.output_dir
    try:
        trainer = Trainer(
            model, dataset, batch_size=args.batch_size, epochs=None if args.iterations else args.epochs,
            iterations=args.iterations, lr=args.lr, optimizer=args.optimizer, lr_schedule=args.lr_schedule,
            momentum=args.momentum, weight_decay=args.weight_decay,
            warmup_iters=args.warmup_iters, warmup_factor=args.warmup_factor, lr_steps=lr_steps,
            clip_grad_norm=args.clip_grad_norm, amp=args.amp, device=device, workers=args.workers,
            seed=args.seed, checkpoint_dir=out, checkpoint_every=args.checkpoint_every,
            keep_checkpoints=args.keep_checkpoints, resume=args.resume, progress=not args.no_progress,
            print_every=args.print_every, model_args=model_args, group_ids=group_ids, dist_info=info,
            extra_state={"args": {k: v for k, v in vars(args).items() if k != "func"}},
        )
        if info.is_main:
            print(f"training ResNet-{args.depth} Mask R-CNN ({model_args['num_classes']} classes) on "
                  f"{len(dataset)} images, {info.world_size} x {args.batch_size} images per step, "
                  f"{trainer.total_iters} steps, {args.optimizer} lr {trainer.optimizer.param_groups[0]['initial_lr']:.4g} "
                  f"({args.lr_schedule}), "
                  f"device {device}", flush=True)
        history = trainer.fit()
    except NonFiniteLossError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        raise UsageError(str(e)) from None
    if info.is_main:
        if out:
            with open(os.path.join(out, "history.json"), "w") as f:
                json.dump(history, f)
            print(f"checkpoint: {os.path.join(out, 'checkpoint.pt')}")
    rc = 0
    if info.is_main and args.eval_at_end:
        val = _dataset(args, train=False, image_size=args.image_size)
        with torch.inference_mode():
            results = _evaluate(trainer.module.eval(), val, device, args,
                                os.path.join(out, "eval.json") if out else None)
        rc = _check_min_ap(results, args)
    if info.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return rc


def cmd_eval(args) -> int:
    import torch

    ck_args = _read_checkpoint(args.checkpoint).get("args") or {}
    if not isinstance(ck_args, dict):  # torchvision's reference scripts: an argparse.Namespace
        ck_args = vars(ck_args)
    image_size = ck_args.get("image_size") if ck_args.get("dataset") == "synthetic" else None
    dataset = _dataset(args, train=False, image_size=image_size)
    device = _device(args.device)
    model, _ = model_from_checkpoint(args.checkpoint, num_classes=int(dataset.num_classes), ops=args.ops,
                                     overrides=_model_kwargs(args))
    _require_pycocotools("eval")
    with torch.inference_mode():
        results = _evaluate(model.to(device), dataset, device, args, args.output_json)
    return _check_min_ap(results, args)


def _list_images(inputs: List[str]) -> List[str]:
    files = []
    for p in inputs:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(_IMAGE_EXTS))
            if not found:
                raise UsageError(f"no images in folder {p}")
            files += found
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise UsageError(f"input not found: {p}")
    return files


def _read_image(path: str):
    """-> float32 Tensor[3, H, W] in [0, 1] (RGB)."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001  PIL raises several kinds for undecodable data
        raise UsageError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255


def _write_png(img, path: str) -> None:
    """uint8 Tensor[3, H, W] -> PNG file."""
    from PIL import Image

    Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(path)


def cmd_predict(args) -> int:
    import torch

    from .visualize import detections_to_records, draw_detections, select_detections

    files = _list_images(args.inputs)
    images = {f: _read_image(f) for f in files}  # all checked before the model loads
    device = _device(args.device)
    model, margs = model_from_checkpoint(args.checkpoint, num_classes=args.num_classes, ops=args.ops,
                                         overrides=_model_kwargs(args))
    _require_pycocotools("predict (it writes masks as COCO RLE)")
    model.to(device)
    names = margs.get("classes")
    os.makedirs(args.output_dir, exist_ok=True)
    used = set()
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        base, k = stem, 1
        while base in used:  # same name in two folders
            k += 1
            base = f"{stem}_{k}"
        used.add(base)
        img = images[f]
        with torch.inference_mode():
            det = model([img.to(device)])[0]
        det = select_detections({k: v.cpu() for k, v in det.items()}, args.score_thresh)
        png = os.path.join(args.output_dir, base + ".png")
        _write_png(draw_detections(img, det, names), png)
        js = os.path.join(args.output_dir, base + ".json")
        with open(js, "w") as fh:
            json.dump({"image": os.path.abspath(f), "height": img.shape[1], "width": img.shape[2],
                       "score_thresh": args.score_thresh,
                       "detections": detections_to_records(det, names)}, fh, indent=1)
        print(f"{f}: {det['scores'].numel()} detections -> {png}, {js}")
    return 0


def cmd_bench(args) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not (os.path.isdir(os.path.join(root, "benchmarks")) and os.path.isfile(os.path.join(root, "benchmarks", "report.py"))):
        raise UsageError("bench runs from a source checkout (benchmarks/ not found next to the package)")
    out = os.path.abspath(args.out or os.path.join(root, "benchmarks", "out"))
    os.makedirs(out, exist_ok=True)
    extra = [a for a in args.pytest_args if a != "--"]
    # the same options as the Makefile's bench target
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-o", "python_files=bench_*.py",
           "-o", "python_functions=bench_*", "--benchmark-only", f"--benchmark-json={out}/bench.json",
           "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name", *extra]
    rc = subprocess.call(cmd, cwd=root)
    if rc != 0:
        print(f"{PROG}: error: the benchmarks failed (pytest exit status {rc})", file=sys.stderr)
        return rc
    return subprocess.call([sys.executable, "benchmarks/report.py", f"{out}/bench.json", "--out", out], cwd=root)


# ---- arguments -----------------------------------------------------------------------------------
def _add_data_args(p, train: bool):
    p.add_argument("--dataset", default="synthetic", help="synthetic (default) or coco")
    p.add_argument("--data-path", help="coco: the image folder")
    p.add_argument("--ann-file", help="coco: the instances JSON")
    p.add_argument("--num-images", type=int, help="synthetic: images (default 200 to train, 50 to evaluate)")
    p.add_argument("--image-size", type=int, help="synthetic: square image side (default 128)")
    p.add_argument("--data-seed", type=int, help="synthetic: data set seed (default 0 to train, 1 to evaluate)")
    if train:
        p.add_argument("--val-num-images", type=int, help="synthetic, --eval-at-end: held-out images (default 50)")
        p.add_argument("--val-data-seed", type=int, help="synthetic, --eval-at-end: held-out seed (default --data-seed + 1)")
        p.add_argument("--val-data-path", help="coco, --eval-at-end: the validation image folder")
        p.add_argument("--val-ann-file", help="coco, --eval-at-end: the validation instances JSON")


def _add_model_args(p, train: bool):
    p.add_argument("--min-size", type=int, help="shorter image side after resizing (model default 800)")
    p.add_argument("--max-size", type=int, help="longest side limit (model default 1333)")
    if train:
        p.add_argument("--anchor-sizes", type=int, nargs=5, metavar="S", help="anchor size per FPN level (default 32 64 128 256 512)")
        p.add_argument("--aspect-ratios", type=float, nargs="+", metavar="R", help="anchor aspect ratios (default 0.5 1 2)")
    if train:
        p.add_argument("--fpn-channels", type=int, help="FPN width (default 256)")
        p.add_argument("--box-head-width", type=int, help="box head MLP width (default 1024)")
        p.add_argument("--mask-head-width", type=int, help="mask head convolution width (default 256)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="any MaskRCNN keyword, e.g. rpn_batch_size_per_image=64 (repeatable)")
    p.add_argument("--ops", default="fused", choices=["fused", "torch"], help="our kernels or plain PyTorch")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="intra-op CPU threads (default: torch's; 1 is best on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Mask R-CNN with fused C++/CUDA kernels.")
    sub = p.add_subparsers(dest="command", metavar="{train,eval,predict,bench}", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a Mask R-CNN (torchrun for several processes)")
    _add_data_args(t, train=True)
    t.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101], help="ResNet depth (default 50)")
    _add_model_args(t, train=True)
    g = t.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=26, help="default 26 (torchvision's schedule)")
    g.add_argument("--iterations", type=int, help="train for this many steps instead of epochs")
    t.add_argument("--batch-size", type=int, default=2, help="images per process (default 2)")
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"], help="default sgd (torchvision's recipe)")
    t.add_argument("--lr", type=float, help="sgd: default 0.02 x total batch / 16; adamw: default 1e-3")
    t.add_argument("--lr-schedule", default="multistep", choices=["multistep", "cosine"],
                   help="after the warm-up: x0.1 at --lr-steps (default) or a cosine to 0")
    t.add_argument("--momentum", type=float, default=0.9, help="sgd only")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--warmup-iters", type=int, help="linear warm-up steps (default 1000, at most one epoch)")
    t.add_argument("--warmup-factor", type=float, default=0.001)
    t.add_argument("--lr-steps", type=int, nargs="*",
                   help="x0.1 at these epochs (iterations with --iterations); default 16/26 and 22/26 of the run")
    t.add_argument("--clip-grad-norm", type=float, help="clip the gradients' global norm")
    t.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    t.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    t.add_argument("--aspect-ratio-group-factor", type=int, default=3,
                   help="batch images of similar aspect ratio (-1: off; default 3)")
    t.add_argument("--output-dir", default="runs/train", help="checkpoints and logs (default runs/train)")
    t.add_argument("--checkpoint-every", type=int, default=0, help="also save every N steps (0: each epoch)")
    t.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoint_<step>.pt files")
    t.add_argument("--resume", metavar="PATH", help="continue from a checkpoint (file or output dir)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--print-every", type=int, default=20, help="log interval without progress bars")
    t.add_argument("--eval-at-end", action="store_true", help="COCO metrics on the validation set")
    t.add_argument("--min-mask-ap50", type=float, metavar="X",
                   help="with --eval-at-end: exit status 1 when the mask AP50 (0..1) is below X")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="COCO box and mask AP of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    _add_data_args(e, train=False)
    _add_model_args(e, train=False)
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--output-json", help="write the metrics (and detections) here")
    e.add_argument("--min-mask-ap50", type=float, metavar="X", help="exit status 1 when the mask AP50 (0..1) is below X")
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="draw detections on images")
    pr.add_argument("inputs", nargs="+", help="image files or folders")
    pr.add_argument("--checkpoint", required=True, help="ours, or a torchvision state_dict .pth")
    pr.add_argument("--num-classes", type=int, help="expected classes (background included)")
    pr.add_argument("--output-dir", default="predictions")
    pr.add_argument("--score-thresh", type=float, default=0.5)
    _add_model_args(pr, train=False)
    pr.set_defaults(func=cmd_predict)

    b = sub.add_parser("bench", help="the benchmarks and their report, as `make bench`")
    b.add_argument("--out", help="report folder (default benchmarks/out)")
    b.set_defaults(func=cmd_bench, pytest_args=[])
    b.epilog = "Other arguments go to pytest (as PYTEST_ARGS does for make bench)."
    return p


def main(argv: Optional[List[str]] = None) -> int:
    try:
        parser = make_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            if args.command != "bench":
                raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
            args.pytest_args = extra
        threads = getattr(args, "threads", None)
        if threads is not None:
            if threads < 1:
                raise UsageError(f"--threads must be >= 1, got {threads}")
            import torch

            torch.set_num_threads(threads)
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except MissingPycocotools as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except Exception as e:  # noqa: BLE001  one line; the traceback on request
        if os.environ.get("MASKRCNN_FAST_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"{PROG}: error: {type(e).__name__}: {msg} (MASKRCNN_FAST_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
