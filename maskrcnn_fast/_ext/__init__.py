"""The private room of the extension: how torch.ops.maskrcnn_fast comes to exist.

- schemas.py: the op registry, every schema written once (setup.py compiles it into _C).
- extension.py: loads the compiled _C (or says why not), after checking the torch release.
- fallback.py: without _C, the same schemas with the pure-PyTorch reference as kernels.
- emulated.py: _C_emu, the CUDA kernels compiled as host C++, behind maskrcnn_fast.emulated.

Nothing here is public API; maskrcnn_fast/__init__.py calls :func:`load_ops` once.
"""
import warnings

from . import extension, fallback

__all__ = ["load_ops"]


def load_ops():
    """Makes torch.ops.maskrcnn_fast exist: loads _C, else registers the pure-PyTorch fallback
    with one warning. Returns (the build record setup.py wrote, or None; why _C is not loaded, or
    None when it is). Raises ImportError when _C was built against another torch release."""
    cfg = extension.build_config()
    error = extension.load(cfg)
    if error is not None:
        fallback.register()
        warnings.warn(
            f"maskrcnn_fast: the compiled extension is not loaded ({error}); every op "
            f"runs on its pure-PyTorch reference implementation (same results, much slower). "
            f"Rebuild it with `make build` or `pip install --no-build-isolation <source>`; "
            f"maskrcnn_fast.build_info() says what is loaded.",
            RuntimeWarning,
            stacklevel=3,
        )
    return cfg, error
