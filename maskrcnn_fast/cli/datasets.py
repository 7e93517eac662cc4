"""The data sets the options name, checked before the work: a COCO folder's images are there,
its annotation file parses and declares its category ids."""
import os

from .errors import UsageError, need, one_line

__all__ = ["MASK_FORMAT", "SHAPE_RULES", "check_scorable", "coco", "dataset_from_args", "match_labels",
           "synthetic_kwargs"]

# The command line's data sets give compact instance masks (maskrcnn_fast.structures.PackedMasks):
# memory that grows with the objects, not with objects x pixels (dense scenes).
MASK_FORMAT = "packed"

# synthetic: the shapes per image and their size (options left unset are not checked)
SHAPE_RULES = [("--min-shapes", lambda v: v >= 1, ">= 1"), ("--max-shapes", lambda v: v >= 1, ">= 1"),
               ("--size-range", lambda v: 0 < v <= 0.5, "in (0, 0.5] (each, a fraction of the image side)")]


def coco(root: str, ann: str, train: bool, options):
    """A CocoDetection checked before the work: the folder and file exist, the JSON parses, its
    category ids are declared and every image it lists is there. options: the (image folder,
    annotation file) option names."""
    opt_root, opt_ann = options
    need(bool(root and ann), f"--dataset coco needs {opt_root} (image folder) and {opt_ann} (instances JSON)")
    need(os.path.isdir(root), f"{opt_root}: image folder not found: {root}")
    need(os.path.isfile(ann), f"{opt_ann}: annotation file not found: {ann}")
    from ..data.coco import CocoDetection
    from ..data.transforms import Compose, RandomHorizontalFlip

    try:
        # torchvision's training recipe: crowd regions are not objects, images without a usable
        # annotation are left out
        ds = CocoDetection(root, ann, transforms=Compose([RandomHorizontalFlip(0.5)]) if train else None,
                           remove_images_without_annotations=train, skip_crowd=train, mask_format=MASK_FORMAT)
    except (ValueError, KeyError, TypeError) as e:  # JSON syntax, missing keys, checks
        msg = one_line(e)
        msg = msg[len(ann) + 2:] if msg.startswith(f"{ann}: ") else msg  # the option names the file
        raise UsageError(f"{opt_ann} {ann}: {msg}") from None
    missing = ds.missing_images()
    need(not missing, f"{opt_root} {root}: {len(missing)} of the {len(ds)} images {ann} lists are missing, "
         f"e.g. {missing[0] if missing else ''}")
    return ds


def synthetic_kwargs(args) -> dict:
    """SyntheticShapes' shape keywords from --min-shapes, --max-shapes and --size-range, checked
    (UsageError naming the option). --max-shapes defaults to 4, or --min-shapes where larger."""
    lo_n, hi_n = getattr(args, "min_shapes", None), getattr(args, "max_shapes", None)
    size_range = getattr(args, "size_range", None)
    for option, test, must in SHAPE_RULES:
        v = {"--min-shapes": lo_n, "--max-shapes": hi_n, "--size-range": size_range}[option]
        for item in [] if v is None else v if isinstance(v, (list, tuple)) else [v]:
            need(test(item), f"{option} must be {must}, got {item:g}")
    kw = {}
    if lo_n is not None:
        kw["min_shapes"] = lo_n
    if hi_n is not None:
        need(lo_n is None or hi_n >= lo_n, f"--max-shapes must be >= --min-shapes ({lo_n}), got {hi_n}")
        kw["max_shapes"] = hi_n
    elif lo_n is not None:
        kw["max_shapes"] = max(4, lo_n)
    if size_range is not None:
        lo, hi = size_range
        need(lo <= hi, f"--size-range LO HI needs LO <= HI, got {lo:g} {hi:g}")
        kw["size_range"] = (float(lo), float(hi))
    return kw


def dataset_from_args(args, train: bool, image_size=None):
    """The training or evaluation data set named by the arguments."""
    if args.dataset == "synthetic":
        from ..data.synthetic import SyntheticShapes

        seed = args.data_seed if args.data_seed is not None else (0 if train else 1)
        n = args.num_images
        if not train and hasattr(args, "val_num_images"):  # train --eval-at-end: the held-out set
            n = args.val_num_images
            seed = args.val_data_seed if args.val_data_seed is not None else (args.data_seed or 0) + 1
        n = n if n is not None else (200 if train else 50)
        size = args.image_size or image_size or 128
        kw = synthetic_kwargs(args)
        try:
            return SyntheticShapes(n, size, seed=seed, mask_format=MASK_FORMAT, **kw)
        except ValueError as e:  # what the options' checks cannot see, as one line
            raise UsageError(f"synthetic data: {one_line(e)}") from None
    if args.dataset == "coco":
        if not train and getattr(args, "val_data_path", None):
            return coco(args.val_data_path, args.val_ann_file, False, ("--val-data-path", "--val-ann-file"))
        ds = coco(args.data_path, args.ann_file, train, ("--data-path", "--ann-file"))
        if train and int(os.environ.get("RANK", 0)) == 0:
            print(ds.drop_summary(), flush=True)
        return ds
    raise UsageError(f"unknown dataset {args.dataset!r} (choose synthetic or coco)")


def check_scorable(dataset, option: str) -> None:
    """eval on an annotation file without annotations: say so, not a table of dashes."""
    gt = getattr(dataset, "coco", None)
    if gt is None:
        return
    real = [a for a in gt.dataset.get("annotations", []) if not a.get("iscrowd", 0)]
    need(bool(real), f"{option} {dataset.ann_file} has no annotations (crowd regions aside): there is no "
         "ground truth to score against (predict draws detections without one)")


def match_labels(dataset, num_classes: int) -> None:
    """torchvision's COCO models predict category ids as labels (91 classes for ids 1..90):
    a COCO data set with those ids is scored so, not with contiguous labels."""
    ids = getattr(dataset, "label_to_cat_id", None)
    if ids and num_classes != dataset.num_classes and max(ids.values()) + 1 == num_classes:
        dataset.use_category_ids_as_labels()
