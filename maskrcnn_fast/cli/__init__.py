"""``maskrcnn-fast`` / ``python -m maskrcnn_fast``: train, eval, predict, export, bench.

    maskrcnn-fast train --dataset synthetic --depth 18 --iterations 300 --output-dir runs/demo
    maskrcnn-fast train ... --optimizer adamw --lr-schedule cosine --fpn-channels 64 --threads 1  # make demo
    torchrun --nproc_per_node=8 -m maskrcnn_fast train --dataset coco --data-path train2017 \\
        --ann-file annotations/instances_train2017.json --weights-backbone ResNet50_Weights.IMAGENET1K_V1 --amp
    maskrcnn-fast eval --checkpoint runs/demo/checkpoint.pt --dataset synthetic
    maskrcnn-fast predict photos/ --weights COCO_V1 --output-dir out
    maskrcnn-fast bench [pytest args]
    maskrcnn-fast export --checkpoint runs/demo --format pt2 --size 128x128 --output demo.pt2

One module per command (its options and its work); the options they share and the checks made
before any work in :mod:`.options`; the failures in :mod:`.errors`. This package is the only
one that knows argparse and :class:`UsageError`: the library raises ValueError / TypeError
naming its argument, and the commands turn those into their one-line messages.
(``python -m maskrcnn_fast.data``, which writes synthetic images as files, is :mod:`.samples`.)

Checkpoints hold how to rebuild the model (depth, number of classes, class names, keyword
arguments), so eval and predict need no model flags; ``--weights`` also takes torchvision's
weights names (see :mod:`maskrcnn_fast.weights`). Everything that can be checked before the
work is (options, output folders, the images an annotation file lists, its category ids).
Bad arguments end with one line on stderr, ``maskrcnn-fast: error: ...`` naming the option,
and exit status 2 (1 when the work fails, e.g. a NaN loss or weights that cannot be fetched).
Reading COCO files, scoring (eval, train --eval-at-end) and predict's mask RLEs need pycocotools:
without it those commands stop at once with one line naming it, exit status 1.
"""
import argparse
import os
import subprocess  # noqa: F401  tests replace subprocess.call through it (bench)
import sys
from typing import List, Optional

from ..data.cocoapi import MissingPycocotools
from ..models.builders import build_model, model_from_checkpoint
from ..weights import WeightsUnavailableError, infer_depth
from . import bench, export, predict, train
from . import eval as evaluate
from .errors import PROG, UsageError, one_line, print_error

__all__ = ["main", "make_parser", "build_model", "infer_depth", "model_from_checkpoint", "UsageError"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(message)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Mask R-CNN with fused C++/CUDA kernels.")
    sub = p.add_subparsers(dest="command", metavar="{train,eval,predict,export,bench}", parser_class=_Parser)
    sub.required = True
    for command in (train, evaluate, predict, export, bench):
        command.add_parser(sub)
    return p


def _run(argv: Optional[List[str]]) -> int:
    args, extra = make_parser().parse_known_args(argv)
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


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return _run(argv)
    except UsageError as e:
        print_error(str(e))
        return 2
    except (MissingPycocotools, WeightsUnavailableError) as e:  # their messages say what to do
        print_error(str(e))
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except Exception as e:  # noqa: BLE001  one line; the traceback on request
        if os.environ.get("MASKRCNN_FAST_DEBUG"):
            raise
        msg = one_line(e)  # a DataLoader worker's error comes with its type already
        msg = msg if msg.startswith(f"{type(e).__name__}: ") else f"{type(e).__name__}: {msg}"
        print_error(f"{msg} (MASKRCNN_FAST_DEBUG=1 shows the traceback)")
        return 1
