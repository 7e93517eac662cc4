"""The eps of the frozen batch norms that weights were trained with, from their content.

torchvision's COCO_V1 weights predate FrozenBatchNorm2d's eps: they need eps = 0, and so do the
models fine-tuned from them. Their file is recognised by its content (torchvision names it after
the first 8 hex digits of its sha256), never by its name: a renamed copy needs eps 0 just the same.
"""
import argparse
import hashlib
import os
from collections.abc import Mapping
from typing import Optional

__all__ = ["COCO_V1_NAMES", "checkpoint_eps", "frozen_bn_eps_of"]

_ZERO_EPS_SHA256 = {"bf2d0c1e": "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"}
COCO_V1_NAMES = ("COCO_V1", "DEFAULT", "MaskRCNN_ResNet50_FPN_Weights.COCO_V1", "MaskRCNN_ResNet50_FPN_Weights.DEFAULT")


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def frozen_bn_eps_of(path=None, checkpoint=None) -> Optional[float]:
    """The FrozenBatchNorm2d eps that weights were trained with, where their content tells
    (None: it does not, use the default 1e-5). ``checkpoint``: what the file holds.

    - our checkpoints: their ``model_args`` ``frozen_bn_eps``;
    - torchvision reference-script checkpoints fine-tuned from COCO_V1 (``args.weights``, or
      the older ``args.pretrained``): 0;
    - torchvision's COCO_V1 file itself, under any name (its sha256): 0.
    """
    ck = checkpoint
    if isinstance(ck, Mapping):
        if "model_args" in ck:  # ours: built with what model_args says
            margs = ck["model_args"] if isinstance(ck["model_args"], Mapping) else {}
            eps = (margs.get("kwargs") or {}).get("frozen_bn_eps")
            return None if eps is None else float(eps)
        args = ck.get("args")
        args = vars(args) if isinstance(args, argparse.Namespace) else args
        if isinstance(args, Mapping) and args.get("model", "maskrcnn_resnet50_fpn") == "maskrcnn_resnet50_fpn":
            if args.get("weights") in COCO_V1_NAMES or args.get("pretrained") is True:
                return 0.0
    if path is not None and os.path.isfile(os.fspath(path)):
        if _file_sha256(os.fspath(path))[:8] in _ZERO_EPS_SHA256:
            return 0.0
    return None


def checkpoint_eps(ck: dict, explicit: Optional[float] = None) -> Optional[float]:
    """The frozen batch norms' eps for a :func:`~maskrcnn_fast.weights.read_weights` dict:
    ``explicit`` when given, else what the checkpoint's content says (never its file name)."""
    if explicit is not None:
        return float(explicit)
    kw = (ck.get("model_args") or {}).get("kwargs") or {}
    if kw.get("frozen_bn_eps") is not None:
        return float(kw["frozen_bn_eps"])
    return frozen_bn_eps_of(ck.get("_path"), ck)
