"""The fuzz tests' (tests/fuzz) hypothesis strategies and comparison helpers."""
import math

import torch
from hypothesis import strategies as st

from maskrcnn_fast import emulated
from support import CUDA_AVAILABLE as CUDA

DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
NONFINITE = [math.nan, math.inf, -math.inf]
HUGE = [1e30, -1e30, 3e38, -3e38, 1e6, -1e6, 2.0 ** 24 + 1, 65504.0, 1e300, -1e300]
TINY = [1e-30, -1e-30, 1e-7, 5e-324, -0.0]
CLIP = math.log(1000.0 / 16)  # bbox_xform_clip, as torchvision's

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


# ---- rpn_proposals and detection_postprocess ------------------------------------------------

def tols(dtype, scale):
    eps = torch.finfo(dtype).eps
    return dict(rtol=2 * eps, atol=4 * eps * scale)


def check_valid_rows(boxes, scores, counts, sizes):
    for i, k in enumerate(counts.tolist()):
        assert 0 <= k <= boxes.shape[1]
        assert bool((boxes[i, k:] == 0).all()) and bool((scores[i, k:] == 0).all())
        b = boxes[i, :k].double()
        assert bool(torch.isfinite(b).all()) and bool(torch.isfinite(scores[i, :k]).all())
        h, w = sizes[i].tolist()
        assert bool((b[:, 0::2] >= 0).all()) and bool((b[:, 0::2] <= w).all())
        assert bool((b[:, 1::2] >= 0).all()) and bool((b[:, 1::2] <= h).all())
        s = scores[i, :k].double()
        assert bool((s[1:] <= s[:-1]).all()), "scores decrease"


def half_consistent(b, s, c, fb, fs, fc, dtype, no_flip):
    """Half/bfloat16 result (b, s, c) of rpn_proposals or detection_postprocess against the float32
    op's (fb, fs, fc). Half and bfloat16 are computed in float32 and each stored value rounded, and
    the filters (min_size, score_thresh, NMS) then see the rounded boxes and probabilities, as
    torchvision's half arithmetic does: so where no threshold can flip (``no_flip``: score_thresh
    < 0, min_size = 0, nms_thresh = 1) the counts are the same, and the same rows, within one
    rounding, as sets (rounding may tie probabilities)."""
    if no_flip:
        assert torch.equal(c, fc)
    if not torch.equal(c, fc):
        return
    eps = torch.finfo(dtype).eps
    for i, k in enumerate(c.tolist()):
        got = torch.cat([b[i, :k].double(), s[i, :k, None].double()], 1)
        want = torch.cat([fb[i, :k].to(dtype).double(), fs[i, :k, None].to(dtype).double()], 1)
        key = lambda t: t[torch.argsort(t[:, 0] * 1e6 + t[:, 1] * 1e3 + t[:, 2], stable=True)]  # noqa: E731
        if no_flip:
            torch.testing.assert_close(key(got), key(want), rtol=2 * eps, atol=2 * eps * 64)


# ---- roi_align and multilevel_roi_align ----------------------------------------------------

HALF_TOL = {torch.float16: dict(rtol=4e-3, atol=4e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5)}


def tv_close(ours, theirs, device):
    # The CUDA kernels (real or emulated) sum gradients with atomics, in the threads' order.
    if device == "cpu" and not emulated.active():
        torch.testing.assert_close(ours.cpu(), theirs.cpu(), rtol=0, atol=0)
    else:
        torch.testing.assert_close(ours.cpu(), theirs.cpu(), rtol=1e-5, atol=1e-5)


def scaled_finite(r, scale):
    """Bool[K]: rows whose scaled corners and sizes stay finite (and far from overflow)."""
    c = r[:, 1:] * scale
    return (torch.isfinite(c) & (c.double().abs() < 1e15)).all(1)


def grid_is_bounded(rois, scale, ph, pw, aligned):
    """True when the adaptive sampling grid stays small (so torchvision terminates quickly)."""
    if rois.numel() == 0:
        return True
    fin = torch.isfinite(rois[:, 1:]).all(1)
    r = rois[fin, 1:] * scale
    size = (r[:, 2:] - r[:, :2]).abs()
    return bool((size[:, 1] / ph <= 16).all()) and bool((size[:, 0] / pw <= 16).all())
