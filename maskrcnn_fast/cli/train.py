"""``maskrcnn-fast train``: a Mask R-CNN trained on synthetic shapes or a COCO folder (torchrun
for several processes), from scratch, from a backbone or from a whole model's weights."""
import json
import os

from ..data.cocoapi import pycocotools
from ..models.builders import DEFAULT_WIDTHS, build_model
from ..weights import (check_weights_spec, checkpoint_eps, infer_depth, load_into, read_backbone_weights,
                       read_weights)
from .datasets import check_scorable, dataset_from_args
from .errors import UsageError, need, one_line, print_error, usage_errors
from .eval import MAX_DETS_RULES, add_max_dets_arg, check_max_dets, check_min_ap, evaluate_and_print
from .options import (AP_HELP, AP_RULE, DATA_RULES, MODEL_RULES, add_data_args, add_model_args, check_folder,
                      check_numbers, device, model_kwargs)

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train a Mask R-CNN (torchrun for several processes)")
    add_data_args(t, train=True)
    t.add_argument("--depth", type=int, choices=[18, 34, 50, 101], help="ResNet depth (default 50, or the --weights')")
    add_model_args(t, train=True)
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
                   help="x0.1 after these many epochs (iterations with --iterations); default 16/26 and 22/26 "
                        "of the run. Epochs count from 1 in the log")
    t.add_argument("--clip-grad-norm", type=float, help="clip the gradients' global norm")
    t.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    t.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    t.add_argument("--aspect-ratio-group-factor", type=int, default=3,
                   help="batch images of similar aspect ratio (-1: off; default 3); no image is left out")
    t.add_argument("--output-dir", default="runs/train",
                   help="checkpoint.pt, history.json and, with --eval-at-end, eval.json (default runs/train)")
    t.add_argument("--checkpoint-every", type=int, default=0, help="also save every N steps (0: each epoch)")
    t.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoint_<step>.pt files")
    t.add_argument("--resume", metavar="PATH", help="continue from a checkpoint (file or output dir)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--print-every", type=int, default=20, help="log interval without progress bars")
    t.add_argument("--eval-at-end", action="store_true",
                   help="COCO metrics on the validation set; detections in <output-dir>/eval.json, "
                        "metrics in eval.metrics.json")
    t.add_argument("--min-mask-ap50", type=float, metavar="X", help="with --eval-at-end: " + AP_HELP)
    add_max_dets_arg(t, "--model-arg box_detections_per_img=2000", prefix="with --eval-at-end: ")
    t.set_defaults(func=run)


_TRAIN_RULES = [
    ("--lr", lambda v: v > 0, "> 0"), ("--momentum", lambda v: v >= 0, ">= 0"),
    ("--weight-decay", lambda v: v >= 0, ">= 0"), ("--warmup-iters", lambda v: v >= 0, ">= 0"),
    ("--warmup-factor", lambda v: 0 < v <= 1, "in (0, 1]"), ("--batch-size", lambda v: v >= 1, ">= 1"),
    ("--workers", lambda v: v >= 0, ">= 0"), ("--clip-grad-norm", lambda v: v > 0, "> 0"),
    ("--checkpoint-every", lambda v: v >= 0, ">= 0"), ("--print-every", lambda v: v >= 1, ">= 1"),
    ("--lr-steps", lambda v: v >= 1, ">= 1 (each)"), ("--aspect-ratio-group-factor", lambda v: v >= -1, ">= -1"),
    ("--trainable-backbone-layers", lambda v: 0 <= v <= 5, "in [0, 5]"),
    ("--iterations", lambda v: v >= 1, ">= 1"),
    ("--fpn-channels", lambda v: v >= 1, "a positive integer"),
    ("--box-head-width", lambda v: v >= 1, "a positive integer"),
    ("--mask-head-width", lambda v: v >= 1, "a positive integer"),
]


def _check_args(args, dev: str) -> None:
    check_numbers(args, _TRAIN_RULES + MODEL_RULES + DATA_RULES + AP_RULE + MAX_DETS_RULES)
    check_max_dets(args)
    need(args.max_dets is None or args.eval_at_end, "--max-dets needs --eval-at-end")
    if args.iterations is None:
        need(args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}")
    need(not args.resume or os.path.exists(args.resume), f"--resume: checkpoint not found: {args.resume}")
    need(not (args.amp and not dev.startswith("cuda")), "--amp needs a CUDA device")
    need(args.lr_steps is None or args.lr_schedule == "multistep", "--lr-steps applies to --lr-schedule multistep")
    need(args.min_mask_ap50 is None or args.eval_at_end, "--min-mask-ap50 needs --eval-at-end")
    need(not (args.weights and args.weights_backbone),
         "--weights and --weights-backbone: give one (--weights holds a backbone already)")
    need(args.trainable_backbone_layers is None or args.weights or args.weights_backbone or args.resume,
         "--trainable-backbone-layers needs --weights or --weights-backbone (without them every layer trains)")
    with usage_errors():
        if args.weights and not args.resume:
            check_weights_spec(args.weights, "--weights", "maskrcnn", args.depth or 50)
        if args.weights_backbone and not args.resume:
            check_weights_spec(args.weights_backbone, "--weights-backbone", "resnet", args.depth or 50)


def _as_resumed(args, model_args: dict) -> None:
    """--resume: the model is built as the run being resumed built it (its weights are in the
    checkpoint); options that would change its shape are refused."""
    with usage_errors():
        ck = read_weights(args.resume, "--resume")
    old = ck.get("model_args") or {}
    if args.depth is None and old.get("depth"):
        model_args["depth"] = old["depth"]
    need(old.get("num_classes") in (None, model_args["num_classes"]),
         f"--resume: the checkpoint has {old.get('num_classes')} classes but the data set has "
         f"{model_args['num_classes']}")
    need(old.get("depth", model_args["depth"]) == model_args["depth"],
         f"--resume: the checkpoint is ResNet-{old.get('depth')}, not --depth {model_args['depth']}")
    old_kw = old.get("kwargs") or {}
    for k, default in DEFAULT_WIDTHS.items():
        theirs, mine = old_kw.get(k, default), model_args["kwargs"].get(k, default)
        need(theirs == mine, f"--resume: the checkpoint has {k.replace('_', '-')} {theirs}, not {mine}")
    for k in ("frozen_batch_norm", "trainable_backbone_layers", "frozen_bn_eps"):
        if k in old_kw:
            model_args["kwargs"][k] = old_kw[k]


def _pretrained(args, model_args: dict):
    """--weights / --weights-backbone -> (Mask R-CNN state_dict or None, ResNet state_dict or
    None); sets the build keywords the checkpoints keep (frozen batch norms, trainable layers,
    eps) so that resume, eval and predict rebuild the same model."""
    kw = model_args["kwargs"]
    state = bb = None
    with usage_errors():
        if args.weights:
            ck = read_weights(args.weights, "--weights")
            state = ck["model"]
            depth = infer_depth(state)
            need(args.depth in (None, depth),
                 f"--weights {args.weights} is a ResNet-{depth} model, not --depth {args.depth}")
            model_args["depth"] = depth
            eps = checkpoint_eps(ck, args.frozen_bn_eps)
            if eps is not None:
                kw["frozen_bn_eps"] = eps
        elif args.weights_backbone:
            bb = read_backbone_weights(args.weights_backbone, model_args["depth"], "--weights-backbone")
    if args.weights or args.weights_backbone:
        kw["frozen_batch_norm"] = True
        layers = args.trainable_backbone_layers
        kw["trainable_backbone_layers"] = 3 if layers is None else layers
    if args.frozen_bn_eps is not None:
        kw["frozen_bn_eps"] = args.frozen_bn_eps
    return state, bb


def _model(args, model_args: dict, init_state, bb_state):
    """-> (the model to train, how it starts, in words)."""
    with usage_errors(type_prefix="bad --model-arg: "):
        model = build_model(model_args, ops=args.ops, weights_backbone=bb_state)
    if init_state is not None:
        with usage_errors():
            skipped = load_into(model, init_state, "--weights")
        return model, f"from --weights {args.weights}" + (
            f" (its {len(skipped)} class-dependent tensors start fresh: it has "
            f"{init_state['roi_heads.box_predictor.cls_score.weight'].shape[0]} classes)" if skipped else "")
    if bb_state is not None:
        return model, f"from backbone weights {args.weights_backbone}"
    return model, "from scratch"


def _trainer(args, model, dataset, dev: str, model_args: dict, info):
    from ..engine import Trainer

    group_ids = None
    if args.aspect_ratio_group_factor >= 0:
        from ..data.samplers import create_aspect_ratio_groups

        group_ids = create_aspect_ratio_groups(dataset, k=args.aspect_ratio_group_factor)
    total = args.iterations if args.iterations is not None else args.epochs
    lr_steps = args.lr_steps if args.lr_steps is not None else [round(total * 16 / 26), round(total * 22 / 26)]
    return Trainer(
        model, dataset, batch_size=args.batch_size, epochs=None if args.iterations else args.epochs,
        iterations=args.iterations, lr=args.lr, optimizer=args.optimizer, lr_schedule=args.lr_schedule,
        momentum=args.momentum, weight_decay=args.weight_decay,
        warmup_iters=args.warmup_iters, warmup_factor=args.warmup_factor, lr_steps=lr_steps,
        clip_grad_norm=args.clip_grad_norm, amp=args.amp, device=dev, workers=args.workers,
        seed=args.seed, checkpoint_dir=args.output_dir, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume, progress=not args.no_progress,
        print_every=args.print_every, model_args=model_args, group_ids=group_ids, dist_info=info,
        extra_state={"args": {k: v for k, v in vars(args).items() if k != "func"}},
    )


def run(args) -> int:
    import torch

    from ..engine import NonFiniteLossError, init_distributed, seed_everything

    dev = device(args.device, int(os.environ.get("LOCAL_RANK", 0)))
    _check_args(args, dev)
    if args.eval_at_end:  # before the training run, not after it
        pycocotools("train --eval-at-end")
    out = args.output_dir
    if out and int(os.environ.get("RANK", 0)) == 0:
        check_folder(out, "--output-dir", ("checkpoint.pt", "history.json", "eval.json"))
    dataset = dataset_from_args(args, train=True)
    val = None
    if args.eval_at_end:
        val = dataset_from_args(args, train=False, image_size=args.image_size)
        check_scorable(val, "--val-ann-file")
    classes = list(getattr(dataset, "classes", []) or []) or None
    model_args = {"depth": args.depth or 50, "num_classes": int(dataset.num_classes), "classes": classes,
                  "kwargs": model_kwargs(args)}
    init_state = bb_state = None
    if args.resume:
        _as_resumed(args, model_args)
    else:
        init_state, bb_state = _pretrained(args, model_args)
    info = init_distributed(dev)
    seed_everything(args.seed)  # the initial weights (DistributedDataParallel copies rank 0's)
    model, start = _model(args, model_args, init_state, bb_state)
    del init_state, bb_state
    try:
        trainer = _trainer(args, model, dataset, dev, model_args, info)
        if info.is_main:
            print(f"training ResNet-{model_args['depth']} Mask R-CNN ({model_args['num_classes']} classes) "
                  f"{start} on {len(dataset)} images, {info.world_size} x {args.batch_size} images per step, "
                  f"{trainer.total_iters} steps, {args.optimizer} lr "
                  f"{trainer.optimizer.param_groups[0]['initial_lr']:.4g} ({args.lr_schedule}), "
                  f"device {dev}", flush=True)
        history = trainer.fit()
    except NonFiniteLossError as e:
        print_error(str(e))
        return 1
    except ValueError as e:
        raise UsageError(one_line(e)) from None
    if info.is_main and out:
        with open(os.path.join(out, "history.json"), "w") as f:
            json.dump(history, f)
        print(f"checkpoint: {os.path.join(out, 'checkpoint.pt')}")
    rc = 0
    if info.is_main and val is not None:
        with torch.inference_mode():
            results = evaluate_and_print(trainer.module.eval(), val, dev, args,
                                         os.path.join(out, "eval.json") if out else None)
        rc = check_min_ap(results, args)
    if info.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return rc
