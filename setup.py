"""Builds maskrcnn_fast._C: csrc/*.cpp and csrc/cpu/*.cpp always, csrc/cuda/*.cu with CUDA.

Switches (environment):
  MASKRCNN_FAST_CUDA   1: build the CUDA kernels or fail; 0: CPU only; unset: CUDA when
                       nvcc and a CUDA build of torch are found.
  TORCH_CUDA_ARCH_LIST architectures, e.g. "9.0" or "8.0;8.6;9.0+PTX".
  MAX_JOBS             parallel compile jobs (ninja).
  CUDA_HOME            defaults to /usr/local/cuda when that exists.
"""
import glob
import os

if not os.environ.get("CUDA_HOME") and os.path.isdir("/usr/local/cuda"):
    # torch guesses /usr/local otherwise and the link step fails.
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"


def _nvcc_found():
    home = cpp_extension.CUDA_HOME
    return home is not None and os.path.exists(os.path.join(home, "bin", "nvcc"))


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


def _arch_list(with_cuda):
    if not with_cuda:
        return []
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if not archs:
        if torch.cuda.is_available():
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            archs = ";".join(f"{a}.{b}" for a, b in sorted(caps))
        else:
            # No GPU to ask: Hopper, the architecture of our CI and benchmark machines.
            archs = "9.0"
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return [a for a in archs.replace(" ", ";").split(";") if a]


def _write_build_config(with_cuda, archs):
    path = os.path.join(ROOT, "maskrcnn_fast", "_build_config.py")
    with open(path, "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"version = {VERSION!r}\n")
        f.write(f"torch_version = {torch.__version__.split('+')[0]!r}\n")
        f.write(f"cuda_version = {(torch.version.cuda if with_cuda else None)!r}\n")
        f.write(f"cuda_arch_list = {archs!r}\n")
        f.write(f"with_cuda = {with_cuda!r}\n")


def _extensions():
    with_cuda = _want_cuda()
    archs = _arch_list(with_cuda)
    _write_build_config(with_cuda, archs)
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    # Exact float arithmetic on both sides: no contraction into FMA, so the CPU kernel and
    # the CUDA kernel round the same way.
    # -fopenmp: at::parallel_for is a header template that runs serially unless the extension
    # itself is compiled with OpenMP (torch's own libgomp is the one loaded at run time).
    cxx = ["-O3", "-ffp-contract=off", "-fopenmp"]
    define_macros = []
    kwargs = {}
    if with_cuda:
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
    print(f"maskrcnn_fast: building with CUDA={with_cuda} archs={archs}")
    return [
        ext(
            "maskrcnn_fast._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=define_macros,
            extra_link_args=["-fopenmp"],
            **kwargs,
        )
    ]


setup(
    name="maskrcnn_fast",
    version=VERSION,
    packages=find_packages(include=["maskrcnn_fast", "maskrcnn_fast.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
