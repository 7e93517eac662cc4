"""Mask R-CNN built on maskrcnn_fast's ops, with torchvision's arguments, state_dict and results."""
from .opset import OpSet, get_ops
from .backbone import BackboneWithFPN, FeaturePyramid, ResNetBody, resnet_fpn_backbone
from .builders import maskrcnn_resnet50_fpn, maskrcnn_resnet_fpn
from .mask_rcnn import MaskRCNN, mask_crops
from .roi_heads import FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, RoIHeads, TwoMLPHead
from .rpn import RegionProposalNetwork, RPNHead
from .transform import ImageList, ImageTransform

__all__ = [
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet_fpn",
    "MaskRCNN",
    "mask_crops",
    "OpSet",
    "get_ops",
    "BackboneWithFPN",
    "FeaturePyramid",
    "ResNetBody",
    "resnet_fpn_backbone",
    "RegionProposalNetwork",
    "RPNHead",
    "RoIHeads",
    "TwoMLPHead",
    "FastRCNNPredictor",
    "MaskRCNNHeads",
    "MaskRCNNPredictor",
    "ImageList",
    "ImageTransform",
]
