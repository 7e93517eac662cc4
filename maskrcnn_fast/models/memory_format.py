"""Which memory format the backbone's convolutions run in, chosen by measurement.

channels_last (NHWC) activations are not faster everywhere: oneDNN runs a 2-core Xeon's
inference ~2.5x faster and a training iteration ~1.2x faster on them (AVX-512 / AMX kernels),
while on a 2-core AMD EPYC without AVX-512 its NHWC backward convolutions made a training
iteration 1.45x slower than NCHW. So the backbone times its own forward (and, when training,
backward) in both formats on the machine it runs on, once per process and input size, and keeps
the faster one.

The measurement (see :func:`time_layouts`) runs on the first image of the actual input at its
full size (cropped only above ``MEASURE_PIXELS``, e.g. a 6000x4000 photo), one warm-up per
format (oneDNN builds its kernels on the first call) and then the two formats alternately
``REPEATS`` times, keeping each one's fastest: the machine may be shared, and alternating
exposes both to the same load. Six backbone passes of one image, once per process and size:
on a 2-core CPU at 800x1088 with gradients, 35-70 s, one to two training iterations (measured:
one timed round was not enough there, a single pass varying by 10% while the formats differed by
2% in one run and 17% in the next). channels_last must win by ``MARGIN`` to be chosen; within it
NCHW stays (torchvision's op order, and no re-layout of the input).

Both formats give the same numbers up to float rounding (a convolution sums in another order);
which one is chosen never changes what is computed. In training that includes ReLU's step: a
pre-activation within rounding of zero may pass in one format and not in the other, moving a
gradient by that element's contribution; each format is as close to float64 as the other
(benchmarks/RESULTS.md, issue 21), so no format is excluded anywhere.

Environment: ``MASKRCNN_FAST_CHANNELS_LAST=1`` / ``0`` skips the measurement and takes
channels_last / NCHW wherever the choice is automatic; ``auto`` (or unset) measures. An explicit
``backbone.channels_last = True / False`` wins over both.
"""
import math
import os
import time
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["ENV", "env_choice", "measuring_allowed", "layout_key", "signature", "time_layouts", "prefer_channels_last",
           "cached", "remember", "clear_cache"]

ENV = "MASKRCNN_FAST_CHANNELS_LAST"
# the proxy input: one image, cropped only above this many pixels (2M: COCO's 800x1333 is timed
# whole). Not smaller: on the 2-core Xeon with oneDNN limited to AVX2, a 512x512 crop timed
# channels_last 1.31x faster (8.7 s against 11.4 s) while at 800x1088 it was 1.23x slower in the
# training iteration; which format wins depends on the activations' size, not only on the ISA
MEASURE_PIXELS = 1 << 21
REPEATS = 2
MARGIN = 0.03

# the clock; tests replace it to drive the choice deterministically
timer: Callable[[], float] = time.perf_counter

# process-wide: (architecture signature, layout_key) -> True (channels_last) / False (NCHW).
# Another model of the same architecture (a deep copy, the evaluation model, a benchmark's
# next instance) reuses the decision instead of measuring again.
_CACHE: Dict[Tuple, bool] = {}


def env_choice() -> Optional[bool]:
    """MASKRCNN_FAST_CHANNELS_LAST: "1" -> True, "0" -> False, "auto" / "" / unset -> None."""
    v = os.environ.get(ENV, "").strip().lower()
    if v in ("", "auto"):
        return None
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV} must be 0, 1 or auto, got {os.environ[ENV]!r}")


def _fx_tracing() -> bool:
    # fx.symbolic_trace; torch.export is covered by is_compiling (the older is_fx_tracing
    # covers both but logs a deprecation warning)
    fx = torch.fx._symbolic_trace
    probe = getattr(fx, "is_fx_symbolic_tracing", None) or getattr(fx, "is_fx_tracing", None)
    return bool(probe()) if probe is not None else False


def measuring_allowed(x: Tensor) -> bool:
    """False under torch.compile / export, jit tracing or scripting, fx tracing and CUDA graph
    capture: timing there would be traced as code (or synchronise inside a capture)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting() or _fx_tracing():
        return False
    if x.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    return True


def layout_key(x: Tensor, mode: str) -> Tuple:
    """What the decision depends on besides the architecture: device, dtype, mode ("train" with
    gradients, "infer" without; the body's folding is part of it), threads, batch, channels and
    the size as a power of two of the pixel count (images resized to 800..1333 fall in one or two
    buckets, not one per padded shape)."""
    n, c, h, w = x.shape
    size = int(round(math.log2(max(h * w, 1))))
    return (x.device.type, x.device.index, x.dtype, mode, torch.get_num_threads(), int(n), int(c), size)


def signature(module: torch.nn.Module) -> Tuple:
    """The architecture as far as speed goes: module types, parameter shapes and which ones
    train (the backward's work), not the values."""
    return tuple(
        (type(m).__name__, tuple((tuple(p.shape), p.requires_grad) for p in m.parameters(recurse=False)))
        for m in module.modules()
    )


def cached(sig: Tuple, key: Tuple) -> Optional[bool]:
    return _CACHE.get((sig, key))


def remember(sig: Tuple, key: Tuple, choice: bool) -> None:
    _CACHE[(sig, key)] = choice


def clear_cache() -> None:
    """Forgets every process-wide decision (the next forward of each size measures again)."""
    _CACHE.clear()


def _sync(device: torch.device) -> None:
    # CUDA runs asynchronously: the clock must be read after the work is done
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_layouts(run: Callable[[bool], None], device: torch.device, repeats: int = REPEATS) -> Tuple[float, float]:
    """-> (NCHW seconds, channels_last seconds): run(False) and run(True) each once to warm
    up, then alternately ``repeats`` times; the fastest of each."""
    best = {False: math.inf, True: math.inf}
    for cl in (False, True):
        run(cl)
    _sync(device)
    for _ in range(repeats):
        for cl in (False, True):
            t0 = timer()
            run(cl)
            _sync(device)
            best[cl] = min(best[cl], timer() - t0)
    return best[False], best[True]


def prefer_channels_last(t_nchw: float, t_cl: float, margin: float = MARGIN) -> bool:
    return t_cl < t_nchw * (1.0 - margin)


def proxy_input(x: Tensor, max_pixels: int = MEASURE_PIXELS) -> Tensor:
    """A crop of the first image of ``x`` with at most ``max_pixels`` pixels, the aspect kept
    and both sides multiples of 32 (as the model pads them), NCHW-contiguous."""
    h, w = x.shape[-2:]
    s = min(1.0, math.sqrt(max_pixels / max(h * w, 1)))
    ph = min(h, max(32, int(h * s) // 32 * 32))
    pw = min(w, max(32, int(w * s) // 32 * 32))
    return x[:1, :, :ph, :pw].contiguous()
