"""Builds maskrcnn_fast._C: csrc/*.cpp and csrc/cpu/*.cpp always, csrc/cuda/*.cu with CUDA. The
op schemas come from the registry maskrcnn_fast/_ext/schemas.py (build/generated/mf_schemas.inc).

Switches (environment):
  MASKRCNN_FAST_CUDA   1: build the CUDA kernels or fail; 0: CPU only; unset: CUDA when
                       nvcc and a CUDA build of torch are found.
  TORCH_CUDA_ARCH_LIST architectures, e.g. "9.0" or "8.0;8.6;9.0+PTX", or "all". Default for
                       a wheel (bdist_wheel: `make wheel`, `python -m build --wheel`, pip
                       installs): "all", every architecture from 7.5 up that both this nvcc
                       and this torch build support, plus PTX of the newest. Default for other
                       builds (`build_ext --inplace`): the visible GPUs, else 9.0.
  MASKRCNN_FAST_EMU    1: also build maskrcnn_fast._C_emu, the CUDA kernels of csrc/cuda compiled
                       as host C++ through csrc/emu (emulated CUDA on CPU tensors, for tests);
                       0: not; unset: for in-place builds (make build / make test), never for
                       wheels. Needs no nvcc.
  MASKRCNN_FAST_EMU_SANITIZE  asan (AddressSanitizer + UBSan) or tsan (ThreadSanitizer): build
                       only _C_emu, instrumented (make sanitize; use with --build-lib).
  MASKRCNN_FAST_STRICT_PTXAS  1: a register spill in a CUDA kernel fails the build (CI).
  MASKRCNN_FAST_PTXAS_VERBOSE 1: ptxas prints every kernel's registers, spills, shared memory.
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


def _ptxas_flags():
    """A register spill is a warning; MASKRCNN_FAST_STRICT_PTXAS=1 (CI) makes it an error, and
    MASKRCNN_FAST_PTXAS_VERBOSE=1 prints each kernel's registers, stack, spills and shared memory
    (benchmarks/RESULTS.md's table)."""
    flags = ["-Xptxas=--warn-on-spills"]
    if os.environ.get("MASKRCNN_FAST_STRICT_PTXAS") == "1":
        flags.append("-Xptxas=--warning-as-error")
    if os.environ.get("MASKRCNN_FAST_PTXAS_VERBOSE") == "1":
        flags.append("-Xptxas=-v")
    return flags


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
        f.write(f"with_emu = {WITH_EMU!r}\n")


class BuildExt(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    """Writes _build_config.py beside the extension it builds: into the source tree for
    --inplace, into the build directory for a wheel (so a wheel build never rewrites the
    in-place build's record)."""

    def run(self):
        super().run()
        if not SANITIZE:
            _write_build_config(os.path.dirname(self.get_ext_fullpath("maskrcnn_fast._C")))


def _want_emu():
    flag = os.environ.get("MASKRCNN_FAST_EMU", "").strip()
    if flag not in ("", "0", "1"):
        raise RuntimeError(f"MASKRCNN_FAST_EMU must be 1, 0 or unset, got {flag!r}")
    if flag:
        return flag == "1"
    # Test-only: wheels and sdists never carry it.
    return not _building_wheel() and "sdist" not in sys.argv[1:]


SANITIZE = os.environ.get("MASKRCNN_FAST_EMU_SANITIZE", "").strip()
if SANITIZE not in ("", "asan", "tsan"):
    raise RuntimeError(f"MASKRCNN_FAST_EMU_SANITIZE must be asan, tsan or unset, got {SANITIZE!r}")
WITH_EMU = bool(SANITIZE) or _want_emu()
LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\(([^)]*)\)\s*(\w+)\s*\(")
EMU_SRC = os.path.join("build", "emu_src")
GENERATED = os.path.join(ROOT, "build", "generated")


def _emu_wrapper(cu):
    """A C++ file that compiles csrc/cuda/<name>.cu through the emulation header, and registers
    the __launch_bounds__ of its kernels (and of the .cuh files it includes): the emulation
    checks launches against them. Rewritten only when its text changes, so ninja keeps its object."""
    sources = [cu] + [os.path.join("csrc", inc) for inc in
                      re.findall(r'#include "(cuda/[^"]+\.cuh)"', open(cu).read())]
    bounds = []
    for src in sources:
        bounds += LAUNCH_BOUNDS.findall(open(src).read())
    name = os.path.splitext(os.path.basename(cu))[0]
    lines = [f"// Generated by setup.py: {cu} as emulated CUDA (csrc/emu).",
             f'#include "{os.path.relpath(cu, "csrc")}"', "", "namespace maskrcnn_fast {",
             "namespace {"]
    for i, (expr, kernel) in enumerate(bounds):
        lines.append(f'const ::mf_emu::LaunchBounds mf_emu_bounds_{i}("{kernel}", '
                     f"::mf_emu::max_threads_of({expr}));")
    lines += ["}  // namespace", "}  // namespace maskrcnn_fast", ""]
    return _write_if_changed(os.path.join(EMU_SRC, f"{name}_emu.cpp"), "\n".join(lines))


def _write_if_changed(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return path


def _schemas_include():
    """Writes the op registry (maskrcnn_fast/_ext/schemas.py, the one place a schema is written)
    as C string literals into build/generated/mf_schemas.inc, which csrc/ops.cpp includes;
    returns the directory to put on the include path. Read without importing the package, which
    needs the extension built."""
    import runpy

    schemas = runpy.run_path(os.path.join(ROOT, "maskrcnn_fast", "_ext", "schemas.py"))["SCHEMAS"]
    lines = ["// Generated by setup.py from maskrcnn_fast/_ext/schemas.py: edit that list, not this."]
    for schema in schemas:
        if not re.fullmatch(r"[\w ,.()\[\]?=>:-]+", schema):
            raise RuntimeError(f"schema with characters a C string literal would need escaped: {schema!r}")
        lines.append(f'"{schema}",')
    _write_if_changed(os.path.join(GENERATED, "mf_schemas.inc"), "\n".join(lines) + "\n")
    return GENERATED


def _emu_extension(depends):
    # The same .cu sources; ops.cpp once more for the schemas (under maskrcnn_fast_emu).
    sources = [_write_if_changed(os.path.join(EMU_SRC, "ops_emu.cpp"),
                                 '// Generated by setup.py: the schemas, for maskrcnn_fast_emu.\n'
                                 '#include "ops.cpp"\n')]
    # csrc/emu/*.cu: the emulation's own planted-defect kernels (tests/test_emulation.py).
    sources += [_emu_wrapper(cu) for cu in
                sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/emu/*.cu"))]
    sources += sorted(glob.glob("csrc/emu/*.cpp"))
    # -O1: the emulation is dominated by thread hand-offs, and it compiles faster. No FMA
    # contraction (as both real builds); no identical-code folding, so every kernel keeps its
    # own symbol (errors name it).
    cxx = ["-O1", "-g1", "-ffp-contract=off", "-fno-ipa-icf", "-pthread"]
    link = ["-pthread"]
    if SANITIZE == "asan":
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                 "-fno-sanitize-recover=undefined"]
        cxx += flags
        link += flags
    elif SANITIZE == "tsan":
        cxx += ["-fsanitize=thread"]
        link += ["-fsanitize=thread"]
    return cpp_extension.CppExtension(
        "maskrcnn_fast._C_emu",
        sources,
        depends=depends + sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/emu/*.cu")),
        include_dirs=[os.path.join(ROOT, "csrc"), GENERATED],
        define_macros=[("MF_EMU", None)],
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )


def _extensions():
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    # setuptools relinks only when a listed file is newer than the .so; ninja then recompiles
    # only the objects whose sources or headers changed.
    depends = sorted(glob.glob("csrc/**/*.h", recursive=True)
                     + glob.glob("csrc/**/*.cuh", recursive=True))
    depends.append(os.path.join(_schemas_include(), "mf_schemas.inc"))
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
            "nvcc": ["-O3", "--fmad=false", "--expt-relaxed-constexpr", "-lineinfo"] + _ptxas_flags(),
        }
        ext = cpp_extension.CUDAExtension
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        ext = cpp_extension.CppExtension
    print(f"maskrcnn_fast {FULL_VERSION}: building with CUDA={WITH_CUDA} archs={ARCHS} "
          f"emulated CUDA={WITH_EMU}{' (' + SANITIZE + ')' if SANITIZE else ''}")
    emu = [_emu_extension(depends)] if WITH_EMU else []
    if SANITIZE:
        return emu
    return emu + [
        ext(
            "maskrcnn_fast._C",
            sources,
            depends=depends,
            include_dirs=[os.path.join(ROOT, "csrc"), GENERATED],
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
    # ONNX export (maskrcnn_fast.deploy.onnx, `maskrcnn-fast export --format onnx`) and its
    # ONNX Runtime session: optional, `pip install maskrcnn_fast[export]`
    extras_require={"export": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"]},
    entry_points={"console_scripts": ["maskrcnn-fast = maskrcnn_fast.cli:main"]},
    zip_safe=False,
    # A wheel's objects (usually for other architectures) apart from the in-place build's, so
    # that neither rebuild undoes the other.
    options={"build": {"build_base": os.path.join("build", "wheel")}} if _building_wheel() else {},
)
