"""``maskrcnn-fast eval``: COCO box and mask AP of a checkpoint."""
import sys

from ..data.cocoapi import pycocotools
from ..weights import read_weights
from .datasets import check_scorable, dataset_from_args, match_labels
from .errors import need, print_error, usage_errors
from .options import (AP_HELP, AP_RULE, DATA_RULES, DETECTION_RULES, MODEL_RULES, add_data_args, add_detection_args,
                      add_model_args, check_file, check_numbers, device, model_from_args, weights_arg)

__all__ = ["add_max_dets_arg", "add_parser", "check_max_dets", "check_min_ap", "evaluate_and_print", "run"]


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="COCO box and mask AP of a checkpoint")
    e.add_argument("--checkpoint", help="ours, a torchvision reference checkpoint or a state_dict .pth")
    add_data_args(e, train=False)
    add_model_args(e, train=False)
    add_detection_args(e)
    add_max_dets_arg(e, "--detections-per-img 2000")
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--output-json", metavar="PATH",
                   help="the detections as a COCO results list (x, y, w, h); the metrics go beside it in "
                        "<name>.metrics.json (eval.json -> eval.metrics.json)")
    e.add_argument("--min-mask-ap50", type=float, metavar="X", help=AP_HELP)
    e.set_defaults(func=run)


def add_max_dets_arg(p, keep_hint: str, prefix: str = "") -> None:
    """--max-dets (eval, train --eval-at-end); keep_hint: how that command keeps 2000 detections."""
    p.add_argument("--max-dets", type=int, nargs="+", metavar="N",
                   help=prefix + "COCO's maxDets, increasing (default 1 10 100): AP is counted at the largest, and "
                        "the table adds AP at each smaller one (dense scenes: --max-dets 100 300 2000 "
                        f"{keep_hint})")


def evaluate_and_print(model, dataset, device_name, args, output_json) -> dict:
    from ..evaluation import evaluate, format_table

    max_dets = getattr(args, "max_dets", None)
    results = evaluate(model, dataset, device_name, batch_size=args.batch_size, output_json=output_json,
                       progress=not args.no_progress, max_dets=max_dets)
    print(format_table(results, max_dets=max_dets))
    return results


MAX_DETS_RULES = [("--max-dets", lambda v: v >= 1, ">= 1")]


def check_max_dets(args) -> None:
    """--max-dets: positive (check_numbers) and increasing, as COCO counts them."""
    v = getattr(args, "max_dets", None)
    if v:
        need(all(b > a for a, b in zip(v, v[1:])),
             f"--max-dets must be increasing (COCO's maxDets, e.g. 100 300 2000), got {' '.join(map(str, v))}")


def check_min_ap(results: dict, args) -> int:
    """--min-mask-ap50: 1 (with one line on stderr) when the mask AP50 is below it, else 0."""
    want = getattr(args, "min_mask_ap50", None)
    if want is None:
        return 0
    got = (results.get("segm") or {}).get("AP50")
    if got is None or got < want:
        shown = "unavailable (no masks)" if got is None else f"{got:.3f}"
        print_error(f"mask AP50 {shown} is below --min-mask-ap50 {want:g}")
        return 1
    print(f"mask AP50 {got:.3f} >= {want:g}: ok")
    return 0


def run(args) -> int:
    import torch

    check_numbers(args, [("--batch-size", lambda v: v >= 1, ">= 1")] + MODEL_RULES + DETECTION_RULES + MAX_DETS_RULES
                  + DATA_RULES + AP_RULE)
    check_max_dets(args)
    spec, option = weights_arg(args)
    if args.output_json:
        from ..evaluation import metrics_path

        check_file(args.output_json, "--output-json")
        check_file(metrics_path(args.output_json), "--output-json (its metrics)")
    with usage_errors():
        ck = read_weights(spec, option)
    pycocotools("eval")  # bad arguments first (a missing checkpoint), then what is not installed
    ck_args = ck.get("args") or {}
    if not isinstance(ck_args, dict):  # torchvision's reference scripts: an argparse.Namespace
        ck_args = vars(ck_args)
    image_size = ck_args.get("image_size") if ck_args.get("dataset") == "synthetic" else None
    dataset = dataset_from_args(args, train=False, image_size=image_size)
    check_scorable(dataset, "--ann-file")
    have = ck["model"].get("roi_heads.box_predictor.cls_score.weight")
    if have is not None:
        match_labels(dataset, int(have.shape[0]))
    dev = device(args.device)
    model, _ = model_from_args(args, spec, option, num_classes=int(dataset.num_classes), checkpoint=ck)
    del ck
    kept = model.roi_heads.detections_per_img
    if args.max_dets and kept < args.max_dets[-1]:
        print(f"note: the model keeps {kept} detections per image, fewer than --max-dets {args.max_dets[-1]} "
              f"counts: --detections-per-img {args.max_dets[-1]} keeps that many", file=sys.stderr)
    with torch.inference_mode():
        results = evaluate_and_print(model.to(dev), dataset, dev, args, args.output_json)
    return check_min_ap(results, args)

