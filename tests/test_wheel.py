"""The wheel, end to end: built for ONE architecture (CPU-only where nvcc or a CUDA torch is
missing), installed into a fresh virtual environment that sees the installed torch, imported from
outside the source tree, one op run on the CPU; cuobjdump lists exactly that architecture.

The build reuses a persistent directory so that a second run recompiles only what changed: the
in-place build's own (build/temp.*) when `make build` used the same configuration (then
nothing is recompiled: CI pays only the link), else build/wheel-test. A first CUDA build there
takes minutes.

Environment: MASKRCNN_FAST_CUDA=0|1 forces the flavour (default: CUDA when nvcc and a CUDA torch
are present); TORCH_CUDA_ARCH_LIST names the architecture when it holds exactly one (default: the
in-place build's, when it has one, else 9.0).
Deselect with ``-m "not wheel"``.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
import torch

import maskrcnn_fast

pytestmark = pytest.mark.wheel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_HOME = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
TORCH_RELEASE = torch.__version__.split("+")[0]


def _want_cuda():
    flag = os.environ.get("MASKRCNN_FAST_CUDA", "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    return torch.version.cuda is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))


def _arch():
    """TORCH_CUDA_ARCH_LIST when it names one architecture, else the in-place build's when it
    has one (its objects are then reused), else 9.0."""
    for archs in (re.split(r"[;\s]+", os.environ.get("TORCH_CUDA_ARCH_LIST", "")),
                  maskrcnn_fast.build_info()["cuda_arch_list"]):
        archs = [a for a in archs if a]
        if len(archs) == 1 and re.fullmatch(r"\d+\.\d", archs[0]):
            return archs[0]
    return "9.0"


def _cuobjdump():
    """On PATH, in CUDA_HOME, or the copy that torch's triton ships (a toolkit without it)."""
    candidates = [shutil.which("cuobjdump"), os.path.join(CUDA_HOME, "bin", "cuobjdump")]
    spec = importlib.util.find_spec("triton")
    if spec is not None and spec.origin:
        candidates.append(os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin", "cuobjdump"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _build_temp(with_cuda, archs):
    """The in-place build's object directory when it was built the same way, else ours."""
    inplace = os.path.join(ROOT, "build", f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}")
    info = maskrcnn_fast.build_info()
    same = (
        os.path.dirname(os.path.abspath(maskrcnn_fast.__file__)) == os.path.join(ROOT, "maskrcnn_fast")
        and info["extension"]
        and bool(info["cuda_kernels"]) == with_cuda
        and info["cuda_arch_list"] == archs
    )
    return inplace if same else os.path.join(ROOT, "build", "wheel-test", "temp")


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MASKRCNN_FAST_NO_EXT", "TORCH_CUDA_ARCH_LIST", "MASKRCNN_FAST_CUDA")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """(path of the built wheel, with_cuda, archs)."""
    with_cuda = _want_cuda()
    archs = [_arch()] if with_cuda else []
    dist = tmp_path_factory.mktemp("dist")
    env = _clean_env(MASKRCNN_FAST_CUDA="1" if with_cuda else "0", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    if with_cuda:
        env["TORCH_CUDA_ARCH_LIST"] = archs[0]
    # bdist_wheel --skip-build: it would run build_ext a second time, and torch's BuildExtension
    # then adds its flags twice, which makes ninja recompile everything.
    cmd = [sys.executable, "setup.py", "build", "--build-base", os.path.join(ROOT, "build", "wheel-test"),
           "--build-temp", _build_temp(with_cuda, archs), "bdist_wheel", "--skip-build", "--dist-dir", str(dist)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    (whl,) = dist.glob("*.whl")
    return whl, with_cuda, archs


def test_wheel_name_contents_and_metadata(wheel):
    whl, with_cuda, _ = wheel
    flavour = "cu" + torch.version.cuda.replace(".", "") if with_cuda else "cpu"
    minor = ".".join(TORCH_RELEASE.split(".")[:2])
    tag = sys.implementation.cache_tag.replace("cpython-", "cp")
    assert re.fullmatch(rf"maskrcnn_fast-\d+\.\d+\.\d+\+{flavour}\.torch{re.escape(minor)}-{tag}-{tag}-.+\.whl",
                        whl.name), whl.name
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta_dir = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(f"{meta_dir}/METADATA").decode()
        entry_points = z.read(f"{meta_dir}/entry_points.txt").decode()
        config = z.read("maskrcnn_fast/_build_config.py").decode()
    assert [n for n in names if re.fullmatch(r"maskrcnn_fast/_C\..*\.so", n)], names
    assert "maskrcnn_fast/ops/reference/__init__.py" in names and "maskrcnn_fast/_ext/fallback.py" in names
    # Neither libtorch nor a CUDA runtime of its own: only our package and its metadata.
    assert all(n.startswith(("maskrcnn_fast/", meta_dir + "/")) for n in names), names
    assert not [n for n in names if re.search(r"lib(torch|c10|cudart)", n)]
    assert f"Requires-Dist: torch=={TORCH_RELEASE}\n" in metadata, metadata
    for dep in ("torchvision", "numpy", "tqdm", "pillow", "pycocotools"):
        assert f"Requires-Dist: {dep}" in metadata, dep
    assert "maskrcnn-fast = maskrcnn_fast.cli:main" in entry_points
    assert f"torch_version = {TORCH_RELEASE!r}" in config and f"with_cuda = {with_cuda!r}" in config


_CHECK = """
import json, torch, torchvision, maskrcnn_fast
g = torch.Generator().manual_seed(0)
xy = torch.rand(200, 2, generator=g) * 100
boxes = torch.cat([xy, xy + 1 + torch.rand(200, 2, generator=g) * 40], 1)
scores = torch.rand(200, generator=g)
keep = maskrcnn_fast.ops.nms(boxes, scores, 0.5)
print(json.dumps({
    "file": maskrcnn_fast.__file__,
    "info": maskrcnn_fast.build_info(),
    "nms_matches_torchvision": torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5)),
    "kept": keep.numel(),
}))
"""


def test_installs_into_a_fresh_venv_and_runs(wheel, tmp_path):
    whl, with_cuda, archs = wheel
    env_dir = tmp_path / "venv"
    # sees this torch even from inside a virtual environment (make test's .venv)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "overlay_venv.py"), str(env_dir)], check=True,
                   capture_output=True)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    p = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                        "--disable-pip-version-check", str(whl)],
                       cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (env_dir / "bin" / "maskrcnn-fast").exists()

    p = subprocess.run([str(py), "-c", _CHECK], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "maskrcnn_fast" not in p.stderr, p.stderr  # no fallback warning
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(purelib), out["file"]
    info = out["info"]
    assert info["extension"] is True, info
    assert info["cuda_kernels"] is with_cuda and info["cuda_arch_list"] == archs, info
    assert info["torch"] == TORCH_RELEASE
    assert out["nms_matches_torchvision"] and out["kept"] > 0


def test_device_code_is_exactly_the_requested_architecture(wheel, tmp_path):
    whl, with_cuda, archs = wheel
    if not with_cuda:
        pytest.skip("CPU-only wheel")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found")
    with zipfile.ZipFile(whl) as z:
        (so,) = [n for n in z.namelist() if re.fullmatch(r"maskrcnn_fast/_C\..*\.so", n)]
        path = z.extract(so, tmp_path)
    elf = subprocess.run([tool, "--list-elf", path], capture_output=True, text=True, check=True).stdout
    want = {"sm_" + a.replace(".", "") for a in archs}
    assert set(re.findall(r"\bsm_\d+a?\b", elf)) == want, elf
    # No "+PTX" was asked for: no PTX either.
    ptx = subprocess.run([tool, "--list-ptx", path], capture_output=True, text=True)
    assert not re.findall(r"\bsm_\d+|compute_\d+", ptx.stdout), ptx.stdout


def test_sdist_holds_the_sources(tmp_path):
    """python -m build --sdist: every C++/CUDA source and header, the package, no build output;
    a plain version (pip compares an sdist's file name with its metadata)."""
    import tarfile

    p = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path)],
                       cwd=ROOT, env=_clean_env(MASKRCNN_FAST_CUDA="0"), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    (sdist,) = tmp_path.glob("*.tar.gz")
    assert re.fullmatch(r"maskrcnn_fast-\d+\.\d+\.\d+\.tar\.gz", sdist.name), sdist.name
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    want = {os.path.relpath(os.path.join(d, f), ROOT)
            for d, _, files in os.walk(os.path.join(ROOT, "csrc")) for f in files
            if f.endswith((".h", ".cuh", ".cpp", ".cu"))}
    assert want and want <= names, sorted(want - names)
    assert {"setup.py", "pyproject.toml", "MANIFEST.in", "PKG-INFO", "maskrcnn_fast/__init__.py",
            "maskrcnn_fast/_ext/fallback.py", "maskrcnn_fast/_ext/schemas.py",
            "maskrcnn_fast/ops/reference/__init__.py"} <= names
    assert not [n for n in names if n.endswith(".so") or n.endswith("_build_config.py")], names
