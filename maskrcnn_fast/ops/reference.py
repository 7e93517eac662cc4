"""Pure-PyTorch implementations of every op: the oracle of the tests (run in float64) and the
"torch" path of the benchmarks. Plain tensor operations, vectorised where the algorithm allows.
"""
from ._reference_boxes import *  # noqa: F401,F403  anchors, box coder
from ._reference_nms import *  # noqa: F401,F403  nms, batched_nms
from ._reference_roi_align import *  # noqa: F401,F403  roi_align
from ._reference_multilevel import *  # noqa: F401,F403  multilevel_roi_align
from ._reference_paste_masks import *  # noqa: F401,F403  paste_masks, paste_masks_batched
from ._reference_fused import *  # noqa: F401,F403  rpn_proposals, detection_postprocess
from ._reference_mask_targets import *  # noqa: F401,F403  mask_targets
from ._reference_matching import *  # noqa: F401,F403  box_iou, match_boxes
