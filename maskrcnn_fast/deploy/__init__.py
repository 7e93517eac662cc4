"""Deployment without Python: torch.export programs, AOTInductor packages and ONNX graphs."""
from .aoti import Pt2MaskRCNN, compile_package, describe, inductor_configs, library_path, load_package
from .program import MASK_MODES, OUTPUT_NAMES, DeployModel, check_model, export, to_detections

__all__ = [
    "DeployModel", "export", "check_model", "to_detections", "OUTPUT_NAMES", "MASK_MODES",
    "compile_package", "load_package", "Pt2MaskRCNN", "inductor_configs", "library_path", "describe",
]
