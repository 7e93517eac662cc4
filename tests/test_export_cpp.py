"""The C++ example (examples/cpp): built with CMake against the installed torch's libtorch, it
loads our ops library and a .pt2 package and runs it on a PPM image, without Python; its
detections equal the eager model's.

Builds into build/cpp-test (incremental: about a minute the first time on 2 cores); the package
is the session's (tests/support/export.py). Skips without cmake or a C++ compiler.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from maskrcnn_fast.deploy import library_path, to_detections

from support.export import SIZE, assert_same_detections, compiled_package

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "cpp-test")

pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler"
)


@pytest.fixture(scope="module")
def runner():
    prefix = torch.utils.cmake_prefix_path
    abi = int(torch.compiled_with_cxx11_abi())
    subprocess.run(["cmake", "-S", os.path.join(ROOT, "examples", "cpp"), "-B", BUILD, f"-DCMAKE_PREFIX_PATH={prefix}",
                    "-DCMAKE_BUILD_TYPE=Release", f"-DMF_CXX11_ABI={abi}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", BUILD], check=True, capture_output=True)
    return os.path.join(BUILD, "maskrcnn_fast_run")


def _write_ppm(path, pixels):
    h, w, _ = pixels.shape
    with open(path, "wb") as f:
        f.write(f"P6\n# made by test_export_cpp\n{w} {h}\n255\n".encode() + pixels.tobytes())


def _read_outputs(path, d, h, w):
    raw = open(path, "rb").read()
    sizes = [(np.float32, (1, d, 4)), (np.int64, (1, d)), (np.float32, (1, d)), (np.float32, (1, d, h, w)),
             (np.int64, (1,))]
    out, at = [], 0
    for dtype, shape in sizes:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        out.append(torch.from_numpy(np.frombuffer(raw[at:at + n], dtype=dtype).reshape(shape).copy()))
        at += n
    assert at == len(raw)
    return out


def test_cpp_example_equals_eager(runner, tmp_path, seed):
    model, package = compiled_package()
    pixels = np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    _write_ppm(tmp_path / "image.ppm", pixels)
    done = subprocess.run([runner, library_path(), package, str(tmp_path / "image.ppm"), str(tmp_path / "out.bin")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        want = model([image])
    d = model.roi_heads.detections_per_img
    got = to_detections(_read_outputs(tmp_path / "out.bin", d, *SIZE))
    assert_same_detections(got, want, score_atol=1e-4, mask_atol=1e-3)
    lines = done.stdout.splitlines()
    assert len(lines) == len(want[0]["labels"])
    assert [int(line.split()[0]) for line in lines] == got[0]["labels"].tolist()
    areas = [int(line.split()[-1]) for line in lines]
    assert areas == [int((m > 0.5).sum()) for m in got[0]["masks"]]


def test_cpp_example_refuses_other_sizes(runner, tmp_path):
    _, package = compiled_package()
    _write_ppm(tmp_path / "small.ppm", np.zeros((64, 80, 3), dtype=np.uint8))
    done = subprocess.run([runner, library_path(), package, str(tmp_path / "small.ppm")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    assert "is 64x80 but" in done.stderr and "was exported for 120x150: resize the image" in done.stderr


def test_cpp_example_names_a_missing_ops_library(runner, tmp_path):
    _, package = compiled_package()
    done = subprocess.run([runner, str(tmp_path / "missing.so"), package, "x.ppm"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "cannot load the ops library" in done.stderr
