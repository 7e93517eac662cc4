"""The CUDA build's kernels, as ptxas compiled them: no spills to local memory, no stack frame,
at most 48 KB of static shared memory per block (scripts/kernel_resources.py; the table is in
benchmarks/RESULTS.md). Runs wherever the CUDA kernels are built, GPU or not (CI builds them)."""
import os
import sys

import pytest

import maskrcnn_fast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import kernel_resources  # noqa: E402


def _library():
    if not maskrcnn_fast.build_info().get("cuda"):
        pytest.skip("the CUDA kernels are not built")
    if kernel_resources.cuobjdump() is None:
        pytest.skip("cuobjdump not found")
    path = maskrcnn_fast._C.__file__
    return path


def test_no_spills_and_static_shared_memory_fits():
    rows = kernel_resources.resources(_library())
    assert rows, "no kernels found in the CUDA build"
    # every kernel of csrc/cuda is there, for every architecture built
    names = {r["name"].split("<")[0] for r in rows}
    assert {"roi_align_forward_kernel", "multilevel_roi_align_forward_kernel", "scan_kernel",
            "mask_kernel", "match_kernel", "paste_masks_kernel"} <= names, sorted(names)
    assert kernel_resources.problems(rows) == []


def test_the_check_sees_a_spill():
    rows = [{"name": "k", "arch": "sm_90", "reg": 255, "stack": 16, "local": 16, "shared": 0},
            {"name": "s", "arch": "sm_90", "reg": 32, "stack": 0, "local": 0, "shared": 49153}]
    bad = kernel_resources.problems(rows)
    assert len(bad) == 2 and "local memory" in bad[0] and "static shared memory" in bad[1]
