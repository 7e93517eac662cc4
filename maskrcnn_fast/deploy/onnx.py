"""ONNX export of Mask R-CNN in standard operators, and an ONNX Runtime session for it.

onnx, onnxscript and onnxruntime are optional (``pip install maskrcnn_fast[export]``); each
function here says which one is missing and how to install it.
"""
import importlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .program import MASK_MODES, OUTPUT_NAMES, _example, check_image_size, check_model, prepare_export, to_detections

__all__ = ["export_onnx", "OnnxMaskRCNN", "require"]

_INSTALL = "pip install 'maskrcnn_fast[export]' (or pip install onnx onnxscript onnxruntime)"


def require(*names: str) -> None:
    """Raises ImportError naming the missing optional package(s) and the command that installs them."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise ImportError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed for ONNX: {_INSTALL}")


def export_onnx(
    model: nn.Module,
    path: str,
    example_images=None,
    *,
    image_size: Optional[Sequence[int]] = None,
    masks: str = "pasted",
    dynamic_batch: bool = True,
) -> str:
    """Exports ``model``'s static-shape inference for one image size to an ONNX file of
    standard operators (opset 18, no custom domain: our ops are translated by
    :mod:`maskrcnn_fast.deploy.onnx_ops`); returns the path.

    Args as :func:`maskrcnn_fast.export`; path: the .onnx file to write (weights inside).
    The graph's input is ``images`` float32 [N, 3, H, W]; its outputs ``boxes`` [N, D, 4],
    ``labels`` int64 [N, D], ``scores`` [N, D], ``masks`` and ``counts`` int64 [N].
    """
    require("onnx", "onnxscript")
    from .onnx_ops import OPSET, TRANSLATIONS

    device = check_model(model)
    if device.type != "cpu":
        raise ValueError(f"the model is on {device}: export ONNX from the CPU (model.cpu()); ONNX Runtime picks "
                         f"its own device")
    if masks not in MASK_MODES:
        raise ValueError(f"masks must be one of {MASK_MODES}, got {masks!r}")
    images = _example(example_images, image_size, None, device)
    if images.dtype != torch.float32:
        raise TypeError(f"example_images must be float32 for ONNX, got {images.dtype}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with torch.no_grad():
        deploy, images, dynamic_shapes = prepare_export(model, images, masks, dynamic_batch)
        program = torch.onnx.export(
            deploy, (images,), dynamo=True, opset_version=OPSET, input_names=["images"],
            output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic_shapes,
            custom_translation_table=TRANSLATIONS, optimize=True, verify=False, report=False,
        )
    program.save(path)
    return path


class OnnxMaskRCNN:
    """An ONNX Runtime session of a graph made by :func:`export_onnx`.

    __call__(images: float32 Tensor or array [N, 3, H, W] of the exported size) -> (boxes,
    labels, scores, masks, counts) as torch tensors; :meth:`detections` gives torchvision's
    list of dicts. providers: ONNX Runtime's (default CPU); threads: intra-op threads (0: ORT's
    default).
    """

    def __init__(self, path: str, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0):
        require("onnxruntime")
        import onnxruntime as ort

        if not os.path.exists(path):
            raise FileNotFoundError(f"no ONNX file at {path}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(path, opts, providers=list(providers))
        shape = self.session.get_inputs()[0].shape
        if not all(isinstance(s, int) for s in shape[1:]):
            raise ValueError(f"{path} is not a maskrcnn_fast graph: its input must be [N, 3, H, W] of fixed H, W")
        self.image_size: Tuple[int, int] = (int(shape[2]), int(shape[3]))
        masks = self.session.get_outputs()[OUTPUT_NAMES.index("masks")].shape
        self.masks = "none" if masks[-1] == 0 else ("pasted" if tuple(masks[-2:]) == self.image_size else "logits")
        self.path = path

    def __call__(self, images) -> Tuple[Tensor, ...]:
        x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got shape {tuple(x.shape)}")
        check_image_size(x.shape, self.image_size, self.path)
        if x.dtype != np.float32:
            raise TypeError(f"images must be float32, got {x.dtype}")
        outs = self.session.run(list(OUTPUT_NAMES), {"images": np.ascontiguousarray(x)})
        return tuple(torch.from_numpy(o) for o in outs)

    def detections(self, images) -> List[Dict[str, Tensor]]:
        return to_detections(self(images), self.masks)
