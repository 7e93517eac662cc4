# Data structures of the training path: instance masks kept compact (PackedMasks: each mask's crop inside its box).
from .packed_masks import PackedMasks, nearest_source_index

__all__ = ["PackedMasks", "nearest_source_index"]
