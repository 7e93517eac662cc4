"""``maskrcnn-fast predict``: detections drawn on images, and as JSON, one image at a time."""
import os
from typing import List

from ..data.cocoapi import pycocotools
from .errors import UsageError, need
from .options import (DETECTION_RULES, MODEL_RULES, add_detection_args, add_model_args, check_folder, check_numbers,
                      device, model_from_args, weights_arg)

__all__ = ["add_parser", "run"]

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def add_parser(sub) -> None:
    pr = sub.add_parser("predict", help="draw detections on images")
    pr.add_argument("inputs", nargs="+", help="image files or folders")
    pr.add_argument("--checkpoint", help="ours, a torchvision reference checkpoint or a state_dict .pth")
    pr.add_argument("--num-classes", type=int, help="expected classes (background included)")
    pr.add_argument("--output-dir", default="predictions",
                    help="a PNG and a JSON (boxes x1, y1, x2, y2 in pixels) per image (default predictions)")
    pr.add_argument("--score-thresh", type=float, default=0.5,
                    help="keep detections scoring at least this (default 0.5); applied before masks are pasted")
    add_model_args(pr, train=False)
    add_detection_args(pr)
    pr.set_defaults(func=run)


def _list_images(inputs: List[str]) -> List[str]:
    files = []
    for p in inputs:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(_IMAGE_EXTS))
            need(bool(found), f"no images in folder {p}")
            files += found
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise UsageError(f"input not found: {p}")
    return files


def run(args) -> int:
    from ..data.images import check_image
    from ..inference.predict import predict_image, read_photo, write_outputs

    check_numbers(args, [("--score-thresh", lambda v: 0 <= v <= 1, "in [0, 1]"),
                         ("--num-classes", lambda v: v >= 2, ">= 2 (background included)")] + MODEL_RULES
                  + DETECTION_RULES)
    spec, option = weights_arg(args)
    files = _list_images(args.inputs)
    for f in files:  # headers only: the pixels are decoded one image at a time below
        try:
            check_image(f)
        except OSError as e:
            raise UsageError(str(e)) from None
    pycocotools("predict (it writes masks as COCO RLE)")  # before the output folder is made
    check_folder(args.output_dir, "--output-dir")
    dev = device(args.device)
    model, margs = model_from_args(args, spec, option, num_classes=args.num_classes)
    model.to(dev)
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
        picture, records = predict_image(model, rgb, dev, args.score_thresh, names)
        del rgb
        png, js = (os.path.join(args.output_dir, base + ext) for ext in (".png", ".json"))
        write_outputs(picture, records, png, js, f, args.score_thresh)
        found = f"{len(records)} detections" if records else \
            f"no detection scores >= {args.score_thresh:g} (--score-thresh)"
        print(f"{f}: {found} -> {png}, {js}", flush=True)
    return 0
