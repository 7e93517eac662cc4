"""``maskrcnn-fast export``: a checkpoint to a .pt2 AOTInductor package, a torch.export program
or an ONNX file (:mod:`maskrcnn_fast.deploy`), with the weights options of eval and predict."""
import importlib.util
import os
import re
import time

from .errors import UsageError, need
from .options import MODEL_RULES, add_model_args, check_file, check_numbers, device, model_from_args, weights_arg

__all__ = ["FORMATS", "add_parser", "run"]

FORMATS = ("pt2", "onnx", "program")


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="a model to a .pt2 AOTInductor package or an ONNX file (deploy without Python)")
    e.add_argument("--checkpoint", help="ours, a torchvision reference checkpoint or a state_dict .pth")
    e.add_argument("--num-classes", type=int, help="expected classes (background included)")
    e.add_argument("--format", default="pt2", choices=FORMATS,
                   help="pt2: AOTInductor package (default); onnx: standard ONNX operators; program: "
                        "torch.export's ExportedProgram (torch.export.load)")
    e.add_argument("--size", required=True, metavar="HxW", help="the one input image size, e.g. 800x1088")
    e.add_argument("--batch", type=int, default=1, help="example batch size (default 1); see --static-batch")
    e.add_argument("--static-batch", action="store_true",
                   help="accept exactly --batch images (default: any batch size from 1 to 64)")
    e.add_argument("--masks", default="pasted", choices=["pasted", "logits", "none"],
                   help="pasted: probabilities at the image size (default); logits: the 28x28 mask logits of "
                        "each detection, to be pasted with its box; none")
    e.add_argument("--optimize", action="store_true",
                   help="fold the batch norms and use channels_last convolutions (optimize_for_inference) first")
    e.add_argument("--no-freezing", action="store_true",
                   help="pt2: keep the weights as inputs of the compiled graph (slower; default: frozen, prepacked)")
    e.add_argument("--output", required=True, metavar="PATH", help="the file to write (.pt2 or .onnx)")
    add_model_args(e, train=False)
    e.set_defaults(func=run)


def _size(text: str):
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise UsageError(f"--size must be HEIGHTxWIDTH in pixels, e.g. 800x1088; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _check_format(args) -> None:
    ext = {"pt2": ".pt2", "onnx": ".onnx", "program": ".pt2"}[args.format]
    need(args.output.endswith(ext), f"--output must end in {ext} for --format {args.format}, got {args.output}")
    if args.format == "onnx":
        missing = [n for n in ("onnx", "onnxscript") if importlib.util.find_spec(n) is None]
        need(not missing, f"--format onnx needs {' and '.join(missing)}: pip install 'maskrcnn_fast[export]'")
        need(not args.optimize, "--optimize is for --format pt2/program: ONNX Runtime folds the batch norms itself")
    need(not (args.no_freezing and args.format != "pt2"), "--no-freezing applies to --format pt2 only")


def run(args) -> int:
    check_numbers(args, [("--batch", lambda v: 1 <= v <= 64, "in [1, 64]"),
                         ("--num-classes", lambda v: v >= 2, ">= 2 (background included)")] + MODEL_RULES)
    size = _size(args.size)
    _check_format(args)
    spec, option = weights_arg(args)
    check_file(args.output, "--output")
    dev = device(args.device)
    need(not (args.format == "onnx" and dev != "cpu"),
         f"--device {args.device}: ONNX is exported from the CPU (ONNX Runtime picks its own device)")

    import torch

    from ..deploy import aoti, program
    from ..inference import optimize_for_inference

    model, _ = model_from_args(args, spec, option, num_classes=args.num_classes)
    model = model.to(dev).eval()
    if args.optimize:
        model = optimize_for_inference(model)
    g = torch.Generator().manual_seed(0)
    example = torch.rand(args.batch, 3, *size, generator=g).to(dev)
    start = time.perf_counter()
    if args.format == "onnx":
        from ..deploy.onnx import export_onnx

        export_onnx(model, args.output, example, masks=args.masks, dynamic_batch=not args.static_batch)
    else:
        exported = program.export(model, example, masks=args.masks, dynamic_batch=not args.static_batch)
        if args.format == "program":
            torch.export.save(exported, args.output)
        else:
            aoti.compile_package(exported, args.output, freezing=not args.no_freezing)
    took = time.perf_counter() - start
    batch = f"{args.batch} images" if args.static_batch else "1 to 64 images"
    print(f"{args.output}: {args.format}, {batch} of {size[0]}x{size[1]} on {dev}, masks {args.masks} "
          f"({os.path.getsize(args.output) / 1e6:.1f} MB, {took:.0f} s)", flush=True)
    return 0
