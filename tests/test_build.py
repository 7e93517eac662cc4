import torch

import maskrcnn_fast


def test_build_info_fields():
    info = maskrcnn_fast.build_info()
    assert set(info) >= {"version", "torch", "torch_runtime", "cuda", "cuda_arch_list", "cuda_kernels"}
    assert info["torch"] == torch.__version__.split("+")[0]
    if info["cuda_kernels"]:
        assert info["cuda"] is not None and info["cuda_arch_list"]
    else:
        assert info["cuda"] is None and info["cuda_arch_list"] == []


def test_ops_registered():
    for name in ["grid_anchors", "decode_boxes", "encode_boxes", "nms", "batched_nms",
                 "roi_align", "_roi_align_backward", "multilevel_roi_align"]:
        assert hasattr(torch.ops.maskrcnn_fast, name), name


def test_public_api():
    for name in maskrcnn_fast.ops.__all__:
        assert hasattr(maskrcnn_fast.ops, name), name
