"""The tests' shared utilities (tests/conftest.py holds the fixtures and the collection hook):

- what this machine runs: ``CUDA_AVAILABLE``, ``NO_CUDA_REASON``, ``needs_pycocotools`` (here);
- ``support.ops``: inputs and oracles shared by one op's tests (tests/test_<op>.py,
  tests/test_cuda_matches_cpu.py, tests/fuzz/test_fuzz_<op>.py);
- ``support.fuzz``: the fuzz tests' hypothesis strategies and comparisons;
- ``support.models``: the models the tests build, by size, a tiny data set, a tiny checkpoint;
- ``support.export``: the deployment tests' model, images and detection comparison;
- ``support.coco``: COCO folders written on the fly;
- ``support.cli``: checks on the command line's one-line errors;
- ``support.fallback_cases``: every op and the model once, with and without the extension (also
  a script, run in a subprocess by tests/test_fallback.py).
"""
import importlib.util

import pytest
import torch

import maskrcnn_fast

CUDA_AVAILABLE = torch.cuda.is_available() and maskrcnn_fast.build_info()["cuda_kernels"]
NO_CUDA_REASON = "no GPU, or the CUDA kernels are not built"

# The GPU machine has no pycocotools: everything but reading and scoring COCO files runs there.
HAS_PYCOCOTOOLS = importlib.util.find_spec("pycocotools") is not None
NO_PYCOCOTOOLS_REASON = "pycocotools is not installed: COCO files can be neither read nor scored"
# A case that reads or scores COCO files: marked ``coco`` (selected with -m coco), skipped by
# tests/conftest.py where pycocotools is missing.
needs_pycocotools = pytest.mark.coco
