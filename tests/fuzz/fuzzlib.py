"""Shared hypothesis strategies and comparison helpers of the fuzz tests."""
import math

import torch
from hypothesis import strategies as st

import maskrcnn_fast

CUDA = torch.cuda.is_available() and maskrcnn_fast.build_info()["cuda_kernels"]
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
NONFINITE = [math.nan, math.inf, -math.inf]
HUGE = [1e30, -1e30, 3e38, -3e38, 1e6, -1e6, 2.0 ** 24 + 1, 65504.0, 1e300, -1e300]
TINY = [1e-30, -1e-30, 1e-7, 5e-324, -0.0]

devices = st.sampled_from(DEVICES)
dtypes = st.sampled_from(FLOATS)
full_dtypes = st.sampled_from([torch.float32, torch.float64])


def coord(lo=-8.0, hi=72.0, nonfinite=False, extreme=True):
    """A coordinate: mostly ordinary, often an integer or a .5 (pixel boundaries and centres),
    sometimes huge, tiny, negative or (when allowed) NaN/Inf."""
    parts = [
        st.integers(int(lo), int(hi)).map(float),
        st.integers(int(2 * lo), int(2 * hi)).map(lambda i: i / 2),
        st.floats(lo, hi, allow_nan=False, allow_infinity=False),
        st.floats(lo, hi, allow_nan=False, allow_infinity=False),
    ]
    if extreme:
        parts.append(st.sampled_from(HUGE + TINY))
    if nonfinite:
        parts.append(st.sampled_from(NONFINITE))
    return st.one_of(*parts)


@st.composite
def boxes(draw, n, lo=-8.0, hi=72.0, nonfinite=False, extreme=True, size_hi=None):
    """Tensor[n, 4] float64: a mix of well-formed boxes (x1 <= x2), inverted and arbitrary ones."""
    c = coord(lo, hi, nonfinite, extreme)
    size_hi = size_hi or (hi - lo)
    rows = []
    for _ in range(n):
        kind = draw(st.sampled_from(["ok", "ok", "ok", "ok", "any", "inverted", "degenerate"]))
        x1, y1 = draw(c), draw(c)
        if kind == "any":
            x2, y2 = draw(c), draw(c)
        else:
            w = draw(st.one_of(st.floats(0, size_hi), st.integers(0, int(size_hi)).map(float),
                               st.sampled_from([0.0, 0.5, 1.0, 1e-6])))
            h = draw(st.one_of(st.floats(0, size_hi), st.integers(0, int(size_hi)).map(float),
                               st.sampled_from([0.0, 0.5, 1.0, 1e-6])))
            if kind == "inverted":
                w, h = -w, -h
            elif kind == "degenerate":
                w = 0.0
            x2, y2 = x1 + w, y1 + h
        rows.append([x1, y1, x2, y2])
    return torch.tensor(rows, dtype=torch.float64).reshape(n, 4)


def tensor(draw, shape, lo=-3.0, hi=3.0, nonfinite=False):
    """A float64 tensor of the given shape from a seed, with some exact 0/1/.5 values and
    (when allowed) some NaN/Inf."""
    seed = draw(st.integers(0, 2 ** 31 - 1))
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo
    if t.numel():
        style = draw(st.sampled_from(["plain", "plain", "quantised", "specials"]))
        if style == "quantised":
            t = (t * 2).round() / 2
        elif style == "specials":
            m = torch.rand(shape, generator=g) < 0.2
            vals = torch.tensor([0.0, 1.0, -1.0, 0.5] + (NONFINITE if nonfinite else []),
                                dtype=torch.float64)
            pick = vals[torch.randint(0, len(vals), shape, generator=g)]
            t = torch.where(m, pick, t)
    return t


def finite_rows(t):
    """Bool[K]: rows of t whose entries are all finite."""
    return torch.isfinite(t).all(dim=1) if t.dim() == 2 else torch.isfinite(t)


def representable(t, dtype):
    """t rounded to dtype, and back to float64; the fuzzed inputs are what the op gets."""
    return t.to(dtype).to(torch.float64)


def non_contiguous(t, draw):
    """Sometimes the same values in a non-contiguous layout."""
    if t.dim() >= 1 and t.numel() and draw(st.booleans()):
        return torch.stack([t, t], dim=-1)[..., 0]
    return t
