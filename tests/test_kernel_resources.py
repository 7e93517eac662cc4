"""The CUDA build's kernels, as ptxas compiled them: no local memory, at most 48 KB of static
shared memory per block (scripts/kernel_resources.py; the table is in benchmarks/RESULTS.md).
Runs wherever the CUDA kernels are built, GPU or not (CI builds them). Register spills fail
CI's build itself (MASKRCNN_FAST_STRICT_PTXAS=1: ptxas --warn-on-spills --warning-as-error)."""
import glob
import os
import re
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


def _kernels_in_sources():
    found = set()
    for path in glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu*")):
        with open(path) as f:
            found |= set(_GLOBAL.findall(f.read()))
    return found


_GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(")


def test_no_local_memory_and_static_shared_memory_fits():
    rows = kernel_resources.resources(_library())
    assert rows, "no kernels found in the CUDA build"
    # every kernel of csrc/cuda is there
    names = {r["name"].split("<")[0] for r in rows}
    assert _kernels_in_sources() <= names, sorted(_kernels_in_sources() - names)
    assert kernel_resources.problems(rows) == []


def test_the_check_sees_a_spill():
    rows = [{"name": "k", "arch": "sm_90", "reg": 255, "stack": 16, "local": 0, "shared": 0, "spills": 8},
            {"name": "s", "arch": "sm_90", "reg": 32, "stack": 0, "local": 0, "shared": 49153},
            {"name": "ok", "arch": "sm_90", "reg": 64, "stack": 24, "local": 0, "shared": 5248}]
    bad = kernel_resources.problems(rows)
    assert len(bad) == 2 and "8 bytes of spills" in bad[0] and "static shared memory" in bad[1]
    log = ("ptxas info    : Function properties for _Z1kv\n"
           "    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n")
    assert kernel_resources.ptxas_spills(log) == {"_Z1kv": 12}
