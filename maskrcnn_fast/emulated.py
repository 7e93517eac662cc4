"""Emulated CUDA: run the CUDA kernels of csrc/cuda on the CPU, from the same source.

``maskrcnn_fast._C_emu`` (built by ``make build`` / ``make test``, never shipped in wheels)
compiles every ``.cu`` file as host C++ through ``csrc/emu``: a block's threads are real OS
threads with real barriers, warp intrinsics and atomics are emulated, and CUDA's launch rules
are errors that name the kernel. Its ops are ``torch.ops.maskrcnn_fast_emu.*`` on CPU tensors,
with the schemas of ``torch.ops.maskrcnn_fast``.

>>> with maskrcnn_fast.emulated.cuda():
...     keep = maskrcnn_fast.ops.nms(boxes, scores, 0.5)   # the CUDA kernels, on CPU tensors

It proves the kernels' indexing, synchronisation, warp logic, atomics, launch configurations and
in-kernel guards. It does not prove nvcc's code generation, the GPU's library math (expf, logf,
log2f), ATen's CUDA ops called from host code (sort, topk, cumsum run their CPU versions here),
stream asynchrony or speed: ``scripts/gpu_check.sh`` on a GPU does.
"""
from ._ext.emulated import active, available, cuda, error

__all__ = ["active", "available", "cuda", "error"]
