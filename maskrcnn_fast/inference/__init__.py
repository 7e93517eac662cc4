"""Inference helpers: a model rewritten for inference (:func:`optimize_for_inference`), its
forward replayed from a CUDA graph (:func:`capture_cuda_graph`), bounded-memory prediction on
photographs (:mod:`.predict`, ``maskrcnn-fast predict``) and the drawing of detections
(:mod:`.visualize`). Deployment without Python is :mod:`maskrcnn_fast.deploy`'s.
"""
from .cuda_graph import CapturedMaskRCNN, capture as capture_cuda_graph
from .optimize import fold_batch_norms, optimize_for_inference

__all__ = ["CapturedMaskRCNN", "capture_cuda_graph", "fold_batch_norms", "optimize_for_inference"]
