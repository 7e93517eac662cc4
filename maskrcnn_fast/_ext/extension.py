"""Loads the compiled extension maskrcnn_fast._C, or says why it is not loaded.

The .so links against the C++ libraries of the torch release it was built with, which keep no
stable ABI between releases: beside another release it fails in the loader with an undefined
symbol, or loads and misbehaves. So the torch release recorded at build time
(_build_config.py) is checked first, before the .so is touched, and a mismatch is one
ImportError that says which torch is needed and how to rebuild. Any other failure to load (no
.so in this copy of the package, a shared library missing) leaves every op to its pure-PyTorch
kernel (maskrcnn_fast/_ext/fallback.py), with one warning.

MASKRCNN_FAST_NO_EXT=1 (any value but empty or 0) skips the extension and the version check:
the pure-PyTorch kernels on purpose.
"""
import importlib
import os
from typing import Optional

import torch

# _C, _C_emu and _build_config live in the top package, where setup.py builds them.
_PACKAGE = __package__.rpartition(".")[0]

__all__ = ["ENV_EMU_LIB", "ENV_NO_EXT", "build_config", "check_torch", "load", "load_emu"]

ENV_NO_EXT = "MASKRCNN_FAST_NO_EXT"
# A path to another build of _C_emu (make sanitize's instrumented ones) to load instead.
ENV_EMU_LIB = "MASKRCNN_FAST_EMU_LIB"


def build_config():
    """The _build_config module setup.py wrote beside _C, or None (a tree never built)."""
    try:
        return importlib.import_module("._build_config", _PACKAGE)
    except ImportError:
        return None


def _release(version: str) -> str:
    return version.split("+")[0]


def _major(cuda_version: str) -> str:
    return str(cuda_version).split(".")[0]


def check_torch(cfg) -> None:
    """Raises ImportError unless the running torch is the release _C was built against (and,
    for CUDA kernels, a CUDA build of the same CUDA major version)."""
    built = cfg.torch_version
    problem = None
    if _release(torch.__version__) != built:
        problem = f"it was built against torch {built}, but torch {torch.__version__} is installed"
    elif cfg.with_cuda and torch.version.cuda is None:
        problem = (f"its CUDA kernels were built against torch {built} with CUDA "
                   f"{cfg.cuda_version}, but the installed torch {torch.__version__} is a "
                   f"CPU-only build")
    elif cfg.with_cuda and _major(torch.version.cuda) != _major(cfg.cuda_version):
        problem = (f"its CUDA kernels were built against torch {built} with CUDA "
                   f"{cfg.cuda_version}, but the installed torch {torch.__version__} uses CUDA "
                   f"{torch.version.cuda}")
    if problem is None:
        return
    raise ImportError(
        f"maskrcnn_fast {cfg.version} cannot be imported: {problem}. Its compiled extension "
        f"works only with the torch release it was built against. Either install that torch "
        f"(pip install torch=={built}), or rebuild maskrcnn_fast against the installed one: "
        f"`pip install --no-build-isolation --no-deps --force-reinstall <maskrcnn_fast source "
        f"directory or sdist>`, or `make build` in a source checkout. (With "
        f"{ENV_NO_EXT}=1 it imports without the extension and runs the slow pure-PyTorch ops.)"
    )


def load(cfg) -> Optional[str]:
    """Imports _C (registering torch.ops.maskrcnn_fast). Returns None when it is loaded, else
    why not; raises ImportError when the torch release does not match (check_torch)."""
    if os.environ.get(ENV_NO_EXT, "").strip() not in ("", "0"):
        return f"{ENV_NO_EXT} is set"
    if cfg is not None:
        check_torch(cfg)
    try:
        importlib.import_module("._C", _PACKAGE)
    except (ImportError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    return None


_emu_error = "not loaded yet"


def load_emu(cfg) -> Optional[str]:
    """Loads the emulated-CUDA extension _C_emu (torch.ops.maskrcnn_fast_emu: the kernels of
    csrc/cuda compiled as host C++, on CPU tensors) once. Returns None when it is loaded, else
    why not. Tests only: wheels do not ship it."""
    global _emu_error
    if _emu_error != "not loaded yet":
        return _emu_error
    path = os.environ.get(ENV_EMU_LIB, "").strip()
    try:
        if cfg is not None:
            check_torch(cfg)
        if path:
            torch.ops.load_library(path)
        else:
            importlib.import_module("._C_emu", _PACKAGE)
        _emu_error = None
    except (ImportError, OSError) as e:
        _emu_error = f"{type(e).__name__}: {e}"
    return _emu_error
