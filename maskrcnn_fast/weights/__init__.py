"""Weights and checkpoints: reading files, torchvision's weights names, the frozen batch norms'
eps rules, saving.

This room sits below :mod:`maskrcnn_fast.models` (it knows state_dicts and files, no model
class): the builders take weights in every form through it, and
:func:`maskrcnn_fast.models.builders.model_from_checkpoint` rebuilds a model from what it reads.
Bad values raise ValueError / TypeError naming the argument; the command line turns them into
its one-line messages.
"""
from .eps import COCO_V1_NAMES, checkpoint_eps, frozen_bn_eps_of
from .files import CHECKPOINT_FILE, load_checkpoint, load_state_dict_file, save_checkpoint, state_dict_of
from .names import (WeightsUnavailableError, coco_category_names, fetch_state_dict, is_weights_enum, is_weights_name,
                    weights_enum)
from .read import check_weights_spec, infer_depth, load_into, read_backbone_weights, read_weights

__all__ = [
    "CHECKPOINT_FILE", "COCO_V1_NAMES", "WeightsUnavailableError", "check_weights_spec", "checkpoint_eps",
    "coco_category_names", "fetch_state_dict", "frozen_bn_eps_of", "infer_depth", "is_weights_enum",
    "is_weights_name", "load_checkpoint", "load_into", "load_state_dict_file", "read_backbone_weights",
    "read_weights", "save_checkpoint", "state_dict_of", "weights_enum",
]
