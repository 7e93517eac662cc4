"""Builds maskrcnn_fast._C: csrc/*.cpp and csrc/cpu/*.cpp always, csrc/cuda/*.cu with CUDA.

Switches (environment):
  MASKRCNN_FAST_CUDA   1: build the CUDA kernels or fail; 0: CPU only; unset: CUDA when
                       nvcc and a CUDA build of torch are found.
  TORCH_CUDA_ARCH_LIST architectures, e.g. "9.0" or "8.0;8.6;9.0+PTX", or "all". Default for
                       a wheel (bdist_wheel: `make wheel`, `python -m build --wheel`, pip
                       installs): "all", every architecture from 7.5 up that both this nvcc
                       and this torch build support, plus PTX of the newest. Default for other
                       builds (`build_ext --inplace`): the visible GPUs, else 9.0.
  MAX_JOBS             parallel compile jobs (ninja).
  CUDA_HOME            defaults to /usr/local/cuda when that exists.

Built from a source checkout, the version carries a local label naming the build:
0.1.0+cu130.torch2.14 (CUDA 13.0, torch 2.14), 0.1.0+cpu.torch2.14 (CPU only). The sdist, and
anything built from it, is plain 0.1.0 (pip checks an sdist's name against its metadata).
"""
import glob
import os
import re
import subprocess
import sys

if not os.environ.get("CUDA_HOME") and os.path.isdir("/usr/local/cuda"):
    # torch guesses /usr/local otherwise and the link step fails.
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"
MIN_ARCH = (7, 5)
# The torch release the extension is built against: the compiled code only loads beside it.
TORCH_RELEASE = torch.__version__.split("+")[0]
TORCH_MINOR = ".".join(TORCH_RELEASE.split(".")[:2])


def _nvcc():
    home = cpp_extension.CUDA_HOME
    return os.path.join(home, "bin", "nvcc") if home else None


def _nvcc_found():
    nvcc = _nvcc()
    return nvcc is not None and os.path.exists(nvcc)


def _want_cuda():
    flag = os.environ.get("MASKRCNN_FAST_CUDA", "").strip()
    if flag not in ("", "0", "1"):
        raise RuntimeError(f"MASKRCNN_FAST_CUDA must be 1, 0 or unset, got {flag!r}")
    if flag == "0":
        return False
    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is not a CUDA build")
    if not _nvcc_found():
        problems.append(f"nvcc not found (CUDA_HOME={cpp_extension.CUDA_HOME})")
    if flag == "1" and problems:
        raise RuntimeError("MASKRCNN_FAST_CUDA=1 but " + "; ".join(problems))
    return not problems


def _parse_arch(s):
    """'sm_90' / 'compute_90' / '90' -> (9, 0); None for arch-specific ('90a') names."""
    m = re.fullmatch(r"(?:sm_|compute_)?(\d+)(\d)", s.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def all_archs():
    """Every architecture >= 7.5 that this nvcc can compile for and this torch build ships
    kernels for (torch.cuda.get_arch_list(); it needs no GPU), the newest also as PTX so that
    later GPUs JIT-compile it. Returns e.g. "7.5;8.0;8.6;9.0;10.0;12.0+PTX"."""
    ours = {_parse_arch(a) for a in torch.cuda.get_arch_list() if a.startswith("sm_")}
    try:
        out = subprocess.run([_nvcc(), "--list-gpu-arch"], capture_output=True, text=True,
                             check=True).stdout
        ours &= {_parse_arch(a) for a in out.split()}
    except (OSError, subprocess.CalledProcessError, TypeError):
        pass  # an nvcc too old to list them: torch's list, cpp_extension checks each
    archs = sorted(a for a in ours if a is not None and a >= MIN_ARCH)
    if not archs:
        raise RuntimeError(
            f"no CUDA architecture >= {MIN_ARCH[0]}.{MIN_ARCH[1]} is supported by both nvcc and "
            f"torch {torch.__version__} ({torch.cuda.get_arch_list()}); set TORCH_CUDA_ARCH_LIST")
    names = [f"{a}.{b}" for a, b in archs]
    names[-1] += "+PTX"
    return ";".join(names)


def _building_wheel():
    return "bdist_wheel" in sys.argv[1:]


def _arch_list(with_cuda):
    if not with_cuda:
        return []
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if archs.lower() == "all" or (not archs and _building_wheel()):
        # A wheel runs on machines other than this one.
        archs = all_archs()
    elif not archs:
        if torch.cuda.is_available():
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            archs = ";".join(f"{a}.{b}" for a, b in sorted(caps))
        else:
            # No GPU to ask: Hopper, the architecture of our CI and benchmark machines.
            archs = "9.0"
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return [a for a in archs.replace(" ", ";").split(";") if a]


def _version(with_cuda):
    if "sdist" in sys.argv[1:] or os.path.exists(os.path.join(ROOT, "PKG-INFO")):
        return VERSION
    flavour = "cu" + torch.version.cuda.replace(".", "") if with_cuda else "cpu"
    return f"{VERSION}+{flavour}.torch{TORCH_MINOR}"


WITH_CUDA = _want_cuda()
ARCHS = _arch_list(WITH_CUDA)
FULL_VERSION = _version(WITH_CUDA)


def _write_build_config(package_dir):
    # Read by maskrcnn_fast/__init__.py before it loads _C: the torch-version rule.
    with open(os.path.join(package_dir, "_build_config.py"), "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"version = {FULL_VERSION!r}\n")
        f.write(f"torch_version = {TORCH_RELEASE!r}\n")
        f.write(f"cuda_version = {(torch.version.cuda if WITH_CUDA else None)!r}\n")
        f.write(f"cuda_arch_list = {ARCHS!r}\n")
        f.write(f"with_cuda = {WITH_CUDA!r}\n")


class BuildExt(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    """Writes _build_config.py beside the extension it builds: into the source tree for
    --inplace, into the build directory for a wheel (so a wheel build never rewrites the
    in-place build's record)."""

    def run(self):
        super().run()
        _write_build_config(os.path.dirname(self.get_ext_fullpath("maskrcnn_fast._C")))


def _extensions():
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    # setuptools relinks only when a listed file is newer than the .so; ninja then recompiles
    # only the objects whose sources or headers changed.
    depends = sorted(glob.glob("csrc/**/*.h", recursive=True)
                     + glob.glob("csrc/**/*.cuh", recursive=True))
    # Exact float arithmetic on both sides: no contraction into FMA, so the CPU kernel and
    # the CUDA kernel round the same way.
    # -fopenmp: at::parallel_for is a header template that runs serially unless the extension
    # itself is compiled with OpenMP (torch's own libgomp is the one loaded at run time).
    cxx = ["-O3", "-ffp-contract=off", "-fopenmp"]
    define_macros = []
    kwargs = {}
    if WITH_CUDA:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        define_macros.append(("MF_WITH_CUDA", None))
        kwargs["extra_compile_args"] = {
            "cxx": cxx,
            "nvcc": ["-O3", "--fmad=false", "--expt-relaxed-constexpr", "-lineinfo"],
        }
        ext = cpp_extension.CUDAExtension
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        ext = cpp_extension.CppExtension
    print(f"maskrcnn_fast {FULL_VERSION}: building with CUDA={WITH_CUDA} archs={ARCHS}")
    return [
        ext(
            "maskrcnn_fast._C",
            sources,
            depends=depends,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=define_macros,
            extra_link_args=["-fopenmp"],
            **kwargs,
        )
    ]


setup(
    name="maskrcnn_fast",
    version=FULL_VERSION,
    packages=find_packages(include=["maskrcnn_fast", "maskrcnn_fast.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExt},
    # The compiled code links against this torch release's libraries (C++ ABI): pin it.
    install_requires=[
        f"torch=={TORCH_RELEASE}",
        "torchvision",
        "numpy",
        "tqdm",
        "pillow",
        "pycocotools",
    ],
    entry_points={"console_scripts": ["maskrcnn-fast = maskrcnn_fast.cli:main"]},
    zip_safe=False,
    # A wheel's objects (usually for other architectures) apart from the in-place build's, so
    # that neither rebuild undoes the other.
    options={"build": {"build_base": os.path.join("build", "wheel")}} if _building_wheel() else {},
)
