"""Weight files: read as torch.load reads them safely, checkpoints written whole or not at all.

A file holds a state_dict, or a dict with one under ``"model"`` (our checkpoints, torchvision's
reference scripts, which also store their ``argparse.Namespace``). A folder stands for the
``checkpoint.pt`` in it (a training run's output folder).
"""
import argparse
import os
from collections.abc import Mapping

import torch

__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "load_state_dict_file", "save_checkpoint", "state_dict_of"]

CHECKPOINT_FILE = "checkpoint.pt"


def load_checkpoint(path, map_location="cpu"):
    """What a weight file holds (``weights_only``: tensors and plain containers), as written by
    :class:`~maskrcnn_fast.engine.Trainer` or anything else; ``path`` may be a folder holding
    ``checkpoint.pt``. Raises FileNotFoundError when there is none."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    # torchvision's reference scripts store their argparse.Namespace next to the weights
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location=map_location, weights_only=True)


def state_dict_of(obj, path) -> Mapping:
    """The state_dict in what a file held: itself, or its ``"model"`` entry. Raises TypeError."""
    sd = obj["model"] if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else obj
    if not isinstance(sd, Mapping):
        raise TypeError(f"{path} does not hold a state_dict (got {type(sd).__name__})")
    return sd


def load_state_dict_file(path) -> Mapping:
    """The state_dict a file holds (see :func:`state_dict_of`)."""
    return state_dict_of(load_checkpoint(path), path)


def save_checkpoint(state: dict, path) -> str:
    """Writes ``state`` to ``path`` through a temporary file, so that a crash mid-write never
    leaves a truncated checkpoint; makes the folder. -> the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path
