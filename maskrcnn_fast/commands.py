"""The train, eval and predict commands of ``maskrcnn-fast`` (see :mod:`maskrcnn_fast.cli`).

Everything that can be checked before the work is checked first: the options' values (errors
name the option), the output folders and files, the images an annotation file lists and its
category ids, the weights.
"""
import json
import os
import sys
import tempfile
from typing import List

from ._pycocotools import pycocotools
from .checkpoints import (DEFAULT_WIDTHS, UsageError, backbone_state, build_model, check_weights_spec, checkpoint_eps,
                          infer_depth, load_into, model_from_checkpoint, parse_model_arg, read_weights)

__all__ = ["cmd_eval", "cmd_predict", "cmd_train"]

PROG = "maskrcnn-fast"
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _one_line(e: BaseException) -> str:
    text = str(e)
    if "Original Traceback" in text:
        # re-raised from a DataLoader worker: its first line says only "Caught OSError in
        # DataLoader worker process 0"; the original's last line names the file
        return [line for line in text.splitlines() if line.strip()][-1].strip()
    return text.splitlines()[0] if text else ""


# ---- checks before the work ----------------------------------------------------------------------
def _need(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def _check_numbers(args, rules) -> None:
    """rules: (option, test, what it must be); options left unset are not checked."""
    for option, test, must in rules:
        v = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if v is None:
            continue
        for item in v if isinstance(v, list) else [v]:
            _need(test(item), f"{option} must be {must}, got {item:g}" if isinstance(item, float)
                  else f"{option} must be {must}, got {item}")


_MODEL_RULES = [("--min-size", lambda v: v >= 1, ">= 1"), ("--max-size", lambda v: v >= 1, ">= 1"),
                ("--frozen-bn-eps", lambda v: v >= 0, ">= 0")]
_DATA_RULES = [("--num-images", lambda v: v >= 1, ">= 1"), ("--val-num-images", lambda v: v >= 1, ">= 1"),
               ("--image-size", lambda v: v >= 8, ">= 8")]
_AP_RULE = [("--min-mask-ap50", lambda v: 0 <= v <= 1, "in [0, 1] (AP as the table prints it)")]


def _check_folder(path: str, option: str, files=()) -> None:
    """Makes the output folder, or fails naming the option when it cannot hold the outputs."""
    _need(not (os.path.exists(path) and not os.path.isdir(path)), f"{option} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
    for name in files:
        _need(not os.path.isdir(os.path.join(path, name)),
              f"{option} {path}: {name} there is a folder, and the run writes a file of that name")


def _check_file(path: str, option: str) -> None:
    """The output file's folder exists (made here) and takes files; the file is not a folder."""
    _need(not os.path.isdir(path), f"{option} {path} is a folder, not a file")
    _check_folder(os.path.dirname(os.path.abspath(path)), f"{option} {path}: its folder")
    _need(not os.path.exists(path) or os.access(path, os.W_OK), f"{option} {path}: not writable")


# ---- model ---------------------------------------------------------------------------------------
def _model_kwargs(args) -> dict:
    kw = {}
    for name in ("min_size", "max_size"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
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


# ---- data ----------------------------------------------------------------------------------------
def _coco(root: str, ann: str, train: bool, options):
    """A CocoDetection checked before the work: the folder and file exist, the JSON parses, its
    category ids are declared and every image it lists is there. options: the (image folder,
    annotation file) option names."""
    opt_root, opt_ann = options
    _need(bool(root and ann), f"--dataset coco needs {opt_root} (image folder) and {opt_ann} (instances JSON)")
    _need(os.path.isdir(root), f"{opt_root}: image folder not found: {root}")
    _need(os.path.isfile(ann), f"{opt_ann}: annotation file not found: {ann}")
    from .data.coco import CocoDetection
    from .data.transforms import Compose, RandomHorizontalFlip

    try:
        # torchvision's training recipe: crowd regions are not objects, images without a usable
        # annotation are left out
        ds = CocoDetection(root, ann, transforms=Compose([RandomHorizontalFlip(0.5)]) if train else None,
                           remove_images_without_annotations=train, skip_crowd=train)
    except (ValueError, KeyError, TypeError) as e:  # JSON syntax, missing keys, checks
        msg = _one_line(e)
        msg = msg[len(ann) + 2:] if msg.startswith(f"{ann}: ") else msg  # the option names the file
        raise UsageError(f"{opt_ann} {ann}: {msg}") from None
    missing = ds.missing_images()
    _need(not missing, f"{opt_root} {root}: {len(missing)} of the {len(ds)} images {ann} lists are missing, "
          f"e.g. {missing[0] if missing else ''}")
    return ds


def _dataset(args, train: bool, image_size=None):
    """The training or evaluation data set named by the arguments."""
    if args.dataset == "synthetic":
        from .data.synthetic import SyntheticShapes

        seed = args.data_seed if args.data_seed is not None else (0 if train else 1)
        n = args.num_images
        if not train and hasattr(args, "val_num_images"):  # train --eval-at-end: the held-out set
            n = args.val_num_images
            seed = args.val_data_seed if args.val_data_seed is not None else (args.data_seed or 0) + 1
        n = n if n is not None else (200 if train else 50)
        size = args.image_size or image_size or 128
        return SyntheticShapes(n, size, seed=seed)
    if args.dataset == "coco":
        if not train and getattr(args, "val_data_path", None):
            return _coco(args.val_data_path, args.val_ann_file, False, ("--val-data-path", "--val-ann-file"))
        ds = _coco(args.data_path, args.ann_file, train, ("--data-path", "--ann-file"))
        if train and int(os.environ.get("RANK", 0)) == 0:
            print(ds.drop_summary(), flush=True)
        return ds
    raise UsageError(f"unknown dataset {args.dataset!r} (choose synthetic or coco)")


def _check_scorable(dataset, option: str) -> None:
    """eval on an annotation file without annotations: say so, not a table of dashes."""
    coco = getattr(dataset, "coco", None)
    if coco is None:
        return
    real = [a for a in coco.dataset.get("annotations", []) if not a.get("iscrowd", 0)]
    _need(bool(real), f"{option} {dataset.ann_file} has no annotations (crowd regions aside): there is no "
          "ground truth to score against (predict draws detections without one)")


def _match_labels(dataset, num_classes: int) -> None:
    """torchvision's COCO models predict category ids as labels (91 classes for ids 1..90):
    a COCO data set with those ids is scored so, not with contiguous labels."""
    ids = getattr(dataset, "label_to_cat_id", None)
    if ids and num_classes != dataset.num_classes and max(ids.values()) + 1 == num_classes:
        dataset.use_category_ids_as_labels()


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
_TRAIN_RULES = [
    ("--lr", lambda v: v > 0, "> 0"), ("--momentum", lambda v: v >= 0, ">= 0"),
    ("--weight-decay", lambda v: v >= 0, ">= 0"), ("--warmup-iters", lambda v: v >= 0, ">= 0"),
    ("--warmup-factor", lambda v: 0 < v <= 1, "in (0, 1]"), ("--batch-size", lambda v: v >= 1, ">= 1"),
    ("--workers", lambda v: v >= 0, ">= 0"), ("--clip-grad-norm", lambda v: v > 0, "> 0"),
    ("--checkpoint-every", lambda v: v >= 0, ">= 0"), ("--print-every", lambda v: v >= 1, ">= 1"),
    ("--lr-steps", lambda v: v >= 1, ">= 1 (each)"), ("--aspect-ratio-group-factor", lambda v: v >= -1, ">= -1"),
    ("--trainable-backbone-layers", lambda v: 0 <= v <= 5, "in [0, 5]"),
    ("--iterations", lambda v: v >= 1, ">= 1"),
]


def _check_train_args(args, device: str) -> None:
    _check_numbers(args, _TRAIN_RULES + _MODEL_RULES + _DATA_RULES + _AP_RULE)
    if args.iterations is None:
        _need(args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}")
    _need(not args.resume or os.path.exists(args.resume), f"--resume: checkpoint not found: {args.resume}")
    _need(not (args.amp and not device.startswith("cuda")), "--amp needs a CUDA device")
    _need(args.lr_steps is None or args.lr_schedule == "multistep", "--lr-steps applies to --lr-schedule multistep")
    _need(args.min_mask_ap50 is None or args.eval_at_end, "--min-mask-ap50 needs --eval-at-end")
    _need(not (args.weights and args.weights_backbone),
          "--weights and --weights-backbone: give one (--weights holds a backbone already)")
    _need(args.trainable_backbone_layers is None or args.weights or args.weights_backbone or args.resume,
          "--trainable-backbone-layers needs --weights or --weights-backbone (without them every layer trains)")
    if args.weights and not args.resume:
        check_weights_spec(args.weights, "--weights", "maskrcnn", args.depth or 50)
    if args.weights_backbone and not args.resume:
        check_weights_spec(args.weights_backbone, "--weights-backbone", "resnet", args.depth or 50)


def _pretrained(args, model_args: dict):
    """--weights / --weights-backbone -> (Mask R-CNN state_dict or None, ResNet state_dict or
    None); sets the build keywords the checkpoints keep (frozen batch norms, trainable layers,
    eps) so that resume, eval and predict rebuild the same model."""
    kw = model_args["kwargs"]
    state = bb = None
    if args.weights:
        ck = read_weights(args.weights, "--weights")
        state = ck["model"]
        depth = infer_depth(state)
        _need(args.depth in (None, depth), f"--weights {args.weights} is a ResNet-{depth} model, not --depth {args.depth}")
        model_args["depth"] = depth
        eps = checkpoint_eps(ck, args.frozen_bn_eps)
        if eps is not None:
            kw["frozen_bn_eps"] = eps
    elif args.weights_backbone:
        bb = backbone_state(args.weights_backbone, model_args["depth"])
    if args.weights or args.weights_backbone:
        kw["frozen_batch_norm"] = True
        kw["trainable_backbone_layers"] = 3 if args.trainable_backbone_layers is None else args.trainable_backbone_layers
    if args.frozen_bn_eps is not None:
        kw["frozen_bn_eps"] = args.frozen_bn_eps
    return state, bb


def cmd_train(args) -> int:
    import torch

    from .engine import NonFiniteLossError, Trainer, init_distributed, seed_everything

    local = int(os.environ.get("LOCAL_RANK", 0))
    device = _device(args.device, local)
    _check_train_args(args, device)
    if args.eval_at_end:  # before the training run, not after it
        pycocotools("train --eval-at-end")
    out = args.output_dir
    if out and int(os.environ.get("RANK", 0)) == 0:
        _check_folder(out, "--output-dir", ("checkpoint.pt", "history.json", "eval.json"))
    dataset = _dataset(args, train=True)
    val = None
    if args.eval_at_end:
        val = _dataset(args, train=False, image_size=args.image_size)
        _check_scorable(val, "--val-ann-file")
    classes = list(getattr(dataset, "classes", []) or []) or None
    model_args = {"depth": args.depth or 50, "num_classes": int(dataset.num_classes), "classes": classes,
                  "kwargs": _model_kwargs(args)}
    init_state = bb_state = None
    if args.resume:
        ck = read_weights(args.resume, "--resume")
        old = ck.get("model_args") or {}
        if args.depth is None and old.get("depth"):
            model_args["depth"] = old["depth"]
        _need(old.get("num_classes") in (None, model_args["num_classes"]),
              f"--resume: the checkpoint has {old.get('num_classes')} classes but the data set has "
              f"{model_args['num_classes']}")
        _need(old.get("depth", model_args["depth"]) == model_args["depth"],
              f"--resume: the checkpoint is ResNet-{old.get('depth')}, not --depth {model_args['depth']}")
        old_kw = old.get("kwargs") or {}
        for k, default in DEFAULT_WIDTHS.items():
            theirs, mine = old_kw.get(k, default), model_args["kwargs"].get(k, default)
            _need(theirs == mine, f"--resume: the checkpoint has {k.replace('_', '-')} {theirs}, not {mine}")
        # built as the run being resumed was (its weights are in the checkpoint)
        for k in ("frozen_batch_norm", "trainable_backbone_layers", "frozen_bn_eps"):
            if k in old_kw:
                model_args["kwargs"][k] = old_kw[k]
        del ck
    else:
        init_state, bb_state = _pretrained(args, model_args)
    info = init_distributed(device)
    seed_everything(args.seed)  # the initial weights (DistributedDataParallel copies rank 0's)
    model = build_model(model_args, ops=args.ops, weights_backbone=bb_state)
    start = "from scratch"
    if init_state is not None:
        skipped = load_into(model, init_state)
        start = f"from --weights {args.weights}" + (
            f" (its {len(skipped)} class-dependent tensors start fresh: it has "
            f"{init_state['roi_heads.box_predictor.cls_score.weight'].shape[0]} classes)" if skipped else "")
        del init_state
    elif bb_state is not None:
        start = f"from backbone weights {args.weights_backbone}"
        del bb_state
    group_ids = None
    if args.aspect_ratio_group_factor >= 0:
        from .data.samplers import create_aspect_ratio_groups

        group_ids = create_aspect_ratio_groups(dataset, k=args.aspect_ratio_group_factor)
    total = args.iterations if args.iterations is not None else args.epochs
    lr_steps = args.lr_steps if args.lr_steps is not None else [round(total * 16 / 26), round(total * 22 / 26)]
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
            print(f"training ResNet-{model_args['depth']} Mask R-CNN ({model_args['num_classes']} classes) "
                  f"{start} on {len(dataset)} images, {info.world_size} x {args.batch_size} images per step, "
                  f"{trainer.total_iters} steps, {args.optimizer} lr "
                  f"{trainer.optimizer.param_groups[0]['initial_lr']:.4g} ({args.lr_schedule}), "
                  f"device {device}", flush=True)
        history = trainer.fit()
    except NonFiniteLossError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        raise UsageError(_one_line(e)) from None
    if info.is_main and out:
        with open(os.path.join(out, "history.json"), "w") as f:
            json.dump(history, f)
        print(f"checkpoint: {os.path.join(out, 'checkpoint.pt')}")
    rc = 0
    if info.is_main and val is not None:
        with torch.inference_mode():
            results = _evaluate(trainer.module.eval(), val, device, args,
                                os.path.join(out, "eval.json") if out else None)
        rc = _check_min_ap(results, args)
    if info.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return rc


def _weights_arg(args) -> tuple:
    """eval / predict: (what to load, the option that named it)."""
    _need(not args.weights_backbone, "--weights-backbone: a backbone alone has untrained heads, nothing to "
          "evaluate or predict with; give --weights or --checkpoint (a whole model)")
    _need(not (args.checkpoint and args.weights), "--checkpoint and --weights name the same thing: give one")
    _need(bool(args.checkpoint or args.weights),
          "--checkpoint or --weights is required: a checkpoint file, or torchvision's weights name (COCO_V1)")
    spec, option = (args.checkpoint, "--checkpoint") if args.checkpoint else (args.weights, "--weights")
    check_weights_spec(spec, option)
    return spec, option


def cmd_eval(args) -> int:
    import torch

    _check_numbers(args, [("--batch-size", lambda v: v >= 1, ">= 1")] + _MODEL_RULES + _DATA_RULES + _AP_RULE)
    spec, option = _weights_arg(args)
    if args.output_json:
        from .evaluation import metrics_path

        _check_file(args.output_json, "--output-json")
        _check_file(metrics_path(args.output_json), "--output-json (its metrics)")
    ck = read_weights(spec, option)
    pycocotools("eval")  # bad arguments first (a missing checkpoint), then what is not installed
    ck_args = ck.get("args") or {}
    if not isinstance(ck_args, dict):  # torchvision's reference scripts: an argparse.Namespace
        ck_args = vars(ck_args)
    image_size = ck_args.get("image_size") if ck_args.get("dataset") == "synthetic" else None
    dataset = _dataset(args, train=False, image_size=image_size)
    _check_scorable(dataset, "--ann-file")
    have = ck["model"].get("roi_heads.box_predictor.cls_score.weight")
    if have is not None:
        _match_labels(dataset, int(have.shape[0]))
    device = _device(args.device)
    model, _ = model_from_checkpoint(spec, num_classes=int(dataset.num_classes), ops=args.ops,
                                     overrides=_model_kwargs(args), frozen_bn_eps=args.frozen_bn_eps,
                                     option=option, checkpoint=ck)
    del ck
    with torch.inference_mode():
        results = _evaluate(model.to(device), dataset, device, args, args.output_json)
    return _check_min_ap(results, args)


def _list_images(inputs: List[str]) -> List[str]:
    files = []
    for p in inputs:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(_IMAGE_EXTS))
            _need(bool(found), f"no images in folder {p}")
            files += found
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise UsageError(f"input not found: {p}")
    return files


def cmd_predict(args) -> int:
    from .data.images import check_image
    from .predict import predict_image, read_photo, write_outputs

    _check_numbers(args, [("--score-thresh", lambda v: 0 <= v <= 1, "in [0, 1]"),
                          ("--num-classes", lambda v: v >= 2, ">= 2 (background included)")] + _MODEL_RULES)
    spec, option = _weights_arg(args)
    files = _list_images(args.inputs)
    for f in files:  # headers only: the pixels are decoded one image at a time below
        try:
            check_image(f)
        except OSError as e:
            raise UsageError(str(e)) from None
    pycocotools("predict (it writes masks as COCO RLE)")  # before the output folder is made
    _check_folder(args.output_dir, "--output-dir")
    device = _device(args.device)
    model, margs = model_from_checkpoint(spec, num_classes=args.num_classes, ops=args.ops,
                                         overrides=_model_kwargs(args), frozen_bn_eps=args.frozen_bn_eps,
                                         option=option)
    model.to(device)
    names = margs.get("classes")
    used = set()
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        base, k = stem, 1
        while base in used:  # same name in two folders
            k += 1
            base = f"{stem}_{k}"
        used.add(base)
        try:
            rgb = read_photo(f)
        except OSError as e:
            raise UsageError(str(e)) from None
        picture, records = predict_image(model, rgb, device, args.score_thresh, names)
        del rgb
        png, js = (os.path.join(args.output_dir, base + ext) for ext in (".png", ".json"))
        write_outputs(picture, records, png, js, f, args.score_thresh)
        found = f"{len(records)} detections" if records else \
            f"no detection scores >= {args.score_thresh:g} (--score-thresh)"
        print(f"{f}: {found} -> {png}, {js}", flush=True)
    return 0
