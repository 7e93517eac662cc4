"""``maskrcnn-fast`` / ``python -m maskrcnn_fast``: train, eval, predict, export, bench.

    maskrcnn-fast train --dataset synthetic --depth 18 --iterations 300 --output-dir runs/demo
    maskrcnn-fast train ... --optimizer adamw --lr-schedule cosine --fpn-channels 64 --threads 1  # make demo
    torchrun --nproc_per_node=8 -m maskrcnn_fast train --dataset coco --data-path train2017 \\
        --ann-file annotations/instances_train2017.json --weights-backbone ResNet50_Weights.IMAGENET1K_V1 --amp
    maskrcnn-fast eval --checkpoint runs/demo/checkpoint.pt --dataset synthetic
    maskrcnn-fast predict photos/ --weights COCO_V1 --output-dir out
    maskrcnn-fast bench [pytest args]
    maskrcnn-fast export --checkpoint runs/demo --format pt2 --size 128x128 --output demo.pt2

Checkpoints hold how to rebuild the model (depth, number of classes, class names, keyword
arguments), so eval and predict need no model flags; ``--weights`` also takes torchvision's
weights names (see :mod:`maskrcnn_fast.checkpoints`). Everything that can be checked before
the work is (options, output folders, the images an annotation file lists, its category ids).
Bad arguments end with one line on stderr, ``maskrcnn-fast: error: ...`` naming the option,
and exit status 2 (1 when the work fails, e.g. a NaN loss or weights that cannot be fetched).
Reading COCO files, scoring (eval, train --eval-at-end) and predict's mask RLEs need pycocotools:
without it those commands stop at once with one line naming it, exit status 1.
"""
import argparse
import os
import subprocess
import sys
from typing import List, Optional

from ._pycocotools import MissingPycocotools
from .checkpoints import UsageError, build_model, infer_depth, model_from_checkpoint
from .commands import PROG, _one_line, cmd_eval, cmd_predict, cmd_train
from .deploy.command import add_export_parser

__all__ = ["main", "build_model", "infer_depth", "model_from_checkpoint", "UsageError"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(message)


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


_WEIGHT_NAMES = "DEFAULT, COCO_V1 or MaskRCNN_ResNet50_FPN_Weights.COCO_V1"


def _add_model_args(p, train: bool):
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
                   help=(f"start from a whole model: a checkpoint file or torchvision's {_WEIGHT_NAMES} "
                         "(torch hub's cache, else downloaded); the class-dependent layers start fresh when the "
                         "data set has other classes") if train else
                   f"the model: a checkpoint file (as --checkpoint) or torchvision's {_WEIGHT_NAMES}")
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


_AP_HELP = "exit status 1 when the mask AP50 is below X, in [0, 1] as the table prints it"


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Mask R-CNN with fused C++/CUDA kernels.")
    sub = p.add_subparsers(dest="command", metavar="{train,eval,predict,export,bench}", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a Mask R-CNN (torchrun for several processes)")
    _add_data_args(t, train=True)
    t.add_argument("--depth", type=int, choices=[18, 34, 50, 101], help="ResNet depth (default 50, or the --weights')")
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
    t.add_argument("--min-mask-ap50", type=float, metavar="X", help="with --eval-at-end: " + _AP_HELP)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="COCO box and mask AP of a checkpoint")
    e.add_argument("--checkpoint", help="ours, a torchvision reference checkpoint or a state_dict .pth")
    _add_data_args(e, train=False)
    _add_model_args(e, train=False)
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--output-json", metavar="PATH",
                   help="the detections as a COCO results list (x, y, w, h); the metrics go beside it in "
                        "<name>.metrics.json (eval.json -> eval.metrics.json)")
    e.add_argument("--min-mask-ap50", type=float, metavar="X", help=_AP_HELP)
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="draw detections on images")
    pr.add_argument("inputs", nargs="+", help="image files or folders")
    pr.add_argument("--checkpoint", help="ours, a torchvision reference checkpoint or a state_dict .pth")
    pr.add_argument("--num-classes", type=int, help="expected classes (background included)")
    pr.add_argument("--output-dir", default="predictions",
                    help="a PNG and a JSON (boxes x1, y1, x2, y2 in pixels) per image (default predictions)")
    pr.add_argument("--score-thresh", type=float, default=0.5,
                    help="keep detections scoring at least this (default 0.5); applied before masks are pasted")
    _add_model_args(pr, train=False)
    pr.set_defaults(func=cmd_predict)

    add_export_parser(sub, _add_model_args)

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
        from .models.builders import WeightsUnavailableError

        if isinstance(e, WeightsUnavailableError):  # its message says what to do
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
        msg = _one_line(e)  # a DataLoader worker's error comes with its type already
        msg = msg if msg.startswith(f"{type(e).__name__}: ") else f"{type(e).__name__}: {msg}"
        print(f"{PROG}: error: {msg} (MASKRCNN_FAST_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
