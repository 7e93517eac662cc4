"""AOTInductor: an exported Mask R-CNN compiled into one .pt2 package, and loaded back.

The package holds the compiled kernels and the weights; it calls our ops through the
dispatcher, so whoever loads it (Python or C++) must have loaded maskrcnn_fast's _C library
first (``import maskrcnn_fast`` in Python; dlopen of ``maskrcnn_fast/_C*.so`` in C++, see
examples/cpp). The package's metadata records the image size, mask mode and batch range, which
:class:`Pt2MaskRCNN` checks before running.
"""
import os
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .program import check_image_size, to_detections

__all__ = ["compile_package", "load_package", "Pt2MaskRCNN", "inductor_configs", "library_path", "describe"]

_KEY = "maskrcnn_fast."


def library_path() -> str:
    """The path of the compiled ops library (maskrcnn_fast/_C*.so) a C++ program must load
    before it loads a package."""
    import importlib.util

    spec = importlib.util.find_spec("maskrcnn_fast._C")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the compiled maskrcnn_fast._C library is not built: run `make build`")
    return spec.origin


def inductor_configs(device: str, freezing: bool = True) -> Dict:
    """The inductor settings a package is compiled with. freezing: the weights become
    constants of the graph, so batch norms fold into the convolutions and, on the CPU, the
    convolution and linear weights are prepacked for oneDNN once at compile time."""
    cfg = {"freezing": bool(freezing)}
    if device == "cpu":
        # oneDNN's blocked weight layouts for the convolutions and linears (freezing needed)
        cfg["cpp.weight_prepack"] = bool(freezing)
    return cfg


def describe(program) -> Dict[str, str]:
    """What a program built by export() takes and gives, read from its signature: image_size
    "HxW", batch "min-max", device, masks mode."""
    from .program import OUTPUT_NAMES

    inputs = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = program.graph_signature.user_inputs
    images = next(n for n in inputs if n.name == user[0]).meta["val"]
    if len(user) != 1 or images.dim() != 4:
        raise ValueError("program must come from maskrcnn_fast.export (one input, Tensor[N, 3, H, W])")
    h, w = int(images.shape[2]), int(images.shape[3])
    n = images.shape[0]
    if isinstance(n, torch.SymInt):
        r = program.range_constraints[n.node.expr]
        batch = f"{int(r.lower)}-{int(r.upper)}"
    else:
        batch = f"{int(n)}-{int(n)}"
    outputs = list(program.graph.output_node().args[0])
    if len(outputs) != len(OUTPUT_NAMES):
        raise ValueError(f"program must return {OUTPUT_NAMES}")
    masks = outputs[OUTPUT_NAMES.index("masks")].meta["val"]
    mode = "none" if masks.shape[-1] == 0 else ("pasted" if tuple(masks.shape[-2:]) == (h, w) else "logits")
    return {"image_size": f"{h}x{w}", "batch": batch, "device": images.device.type, "masks": mode}


def compile_package(program, package_path: str, *, freezing: bool = True, configs: Optional[Dict] = None) -> str:
    """Compiles an exported program (:func:`maskrcnn_fast.export`) with AOTInductor
    into one .pt2 file at ``package_path``; returns the path. Minutes on a few CPU cores.

    configs: further inductor settings, over :func:`inductor_configs`'s.
    """
    if not isinstance(program, torch.export.ExportedProgram):
        raise TypeError(f"program must be a torch.export.ExportedProgram (from export()), got {type(program).__name__}")
    if not str(package_path).endswith(".pt2"):
        raise ValueError(f"package_path must end in .pt2, got {package_path!r}")
    device = _program_device(program)
    cfg = inductor_configs(device, freezing)
    cfg.update(configs or {})
    cfg["aot_inductor.metadata"] = {_KEY + k: v for k, v in describe(program).items()}
    folder = os.path.dirname(os.path.abspath(package_path))
    os.makedirs(folder, exist_ok=True)
    from torch._inductor import aoti_compile_and_package

    # inductor freezes (constant weights, oneDNN prepacking) only with gradients off
    with torch.no_grad():
        return aoti_compile_and_package(program, package_path=str(package_path), inductor_configs=cfg)


def _program_device(program) -> str:
    for node in program.graph.nodes:
        if node.op == "placeholder" and "val" in node.meta and isinstance(node.meta["val"], Tensor):
            return node.meta["val"].device.type
    return "cpu"


class Pt2MaskRCNN:
    """A loaded .pt2 package (made by :func:`compile_package`).

    __call__(images: float Tensor[N, 3, H, W], exactly the exported (H, W), N in the exported
    batch range, on the package's device) -> (boxes [N, D, 4], labels [N, D], scores [N, D],
    masks, counts [N]) as :class:`maskrcnn_fast.deploy.DeployModel`; :meth:`detections` gives
    torchvision's list of dicts. Attributes: image_size (H, W), masks (mode), batch (min, max),
    device, runner (torch's AOTICompiledModel).
    """

    def __init__(self, path: str, device_index: int = -1):
        if not os.path.exists(path):
            raise FileNotFoundError(f"no package at {path}")
        from torch._inductor import aoti_load_package

        self.runner = aoti_load_package(path, device_index=device_index)
        meta = {k[len(_KEY):]: v for k, v in self.runner.get_metadata().items() if k.startswith(_KEY)}
        if "image_size" not in meta:
            raise ValueError(f"{path} is not a maskrcnn_fast package (its metadata lacks the image size)")
        h, w = (int(s) for s in meta["image_size"].split("x"))
        self.image_size: Tuple[int, int] = (h, w)
        self.masks = meta.get("masks", "pasted")
        lo, hi = (int(s) for s in meta.get("batch", "1-64").split("-"))
        self.batch = (lo, hi)
        self.device = torch.device(meta.get("device", "cpu"))
        self.path = path

    def check(self, images: Tensor) -> None:
        """Raises, saying what to do, for images the package was not exported for."""
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a float Tensor[N, 3, H, W], got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be Tensor[N, 3, H, W], got shape {tuple(images.shape)}")
        check_image_size(images.shape, self.image_size, self.path)
        lo, hi = self.batch
        if not lo <= images.shape[0] <= hi:
            raise ValueError(f"images hold {images.shape[0]} images; {self.path} takes {lo} to {hi}")
        if images.dtype != torch.float32:
            raise TypeError(f"images must be float32, got {images.dtype}")
        if images.device.type != self.device.type:
            raise ValueError(f"images are on {images.device} but the package was compiled for {self.device}")

    def __call__(self, images: Tensor) -> Tuple[Tensor, ...]:
        self.check(images)
        return tuple(self.runner(images.contiguous()))

    def detections(self, images: Tensor) -> List[Dict[str, Tensor]]:
        return to_detections(self(images), self.masks)


def load_package(path: str, device_index: int = -1) -> Pt2MaskRCNN:
    """Loads a .pt2 package made by :func:`compile_package` (``import maskrcnn_fast`` has
    registered the ops it calls)."""
    return Pt2MaskRCNN(path, device_index)

