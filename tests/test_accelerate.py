"""maskrcnn_fast.accelerate: our kernels behind torchvision's registered ops (issue 20, op level).

Each case compares torchvision with the acceleration on against torchvision's own kernels on the
same inputs, and proves which kernel ran by the adapters' call counts
(``accelerate.kernel_calls()``) and by the kernel the dispatcher holds. The autouse fixture
restores torchvision's kernels after every case: the other test files use torchvision as their
oracle.
"""
import types

import pytest
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign, RoIAlign

import maskrcnn_fast
from maskrcnn_fast import accelerate
from support.ops import fma_tol, random_boxes, random_rois

pytestmark = pytest.mark.skipif(
    not maskrcnn_fast.build_info()["extension"], reason="the compiled extension is not loaded"
)

OPS = ("nms", "roi_align", "_roi_align_backward")
TV = torch.ops.torchvision
# Each backend kernel torchvision registered itself: its debug string names its source file.
TORCHVISION_KERNELS = {
    (op, key): repr(torch.library.get_kernel(f"torchvision::{op}", key)) for op in OPS for key in ("CPU", "CUDA")
}


def dispatched(op, key="CPU"):
    return repr(torch.library.get_kernel(f"torchvision::{op}", key))


def torchvision_kernels_active():
    return all(dispatched(op, key) == want for (op, key), want in TORCHVISION_KERNELS.items())


@pytest.fixture(autouse=True)
def restore():
    """Every case leaves torchvision's own kernels behind its ops."""
    assert torchvision_kernels_active()
    yield
    accelerate.restore_torchvision()
    assert not accelerate.is_accelerated() and torchvision_kernels_active()


class Calls:
    """Calls our adapters took (``ours``) and handed to torchvision's kernel (``fallback``) since
    the block began."""

    def __init__(self, op):
        self.op = op

    def __enter__(self):
        self.start = accelerate.kernel_calls()
        return self

    def __exit__(self, *exc):
        now = accelerate.kernel_calls()
        self.ours = now.get(self.op, 0) - self.start.get(self.op, 0)
        key = self.op + ":torchvision"
        self.fallback = now.get(key, 0) - self.start.get(key, 0)


def assert_same_as_torchvision(ours, theirs, device, inputs=None, size=None, terms=1):
    # tests/test_roi_align.py's rule for our roi_align against torchvision's (support.ops.fma_tol):
    # bitwise on the CPU (same operation order, no FMA); on CUDA torchvision's kernel contracts
    # into FMAs and ours does not: 4 ulps of the inputs' magnitude per pixel of coordinate, and
    # one ulp of float16 / bfloat16 for results rounded to them. ``inputs``: the map (forward)
    # or the output's gradient (backward: ``size`` the map's side, ``terms`` ROIs per pixel).
    assert ours.is_contiguous() == theirs.is_contiguous()
    if device == "cpu":
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        return
    size = max(inputs.shape[-2:]) if size is None else size
    narrow = ours.dtype if ours.dtype in (torch.float16, torch.bfloat16) else None
    tol = fma_tol(device, ours.dtype, inputs.detach().abs().max().item(), size, terms, narrow)
    torch.testing.assert_close(ours, theirs, **tol)


def _scores(n, device, dtype=torch.float32):
    return (torch.randperm(n, dtype=torch.float64) / max(n, 1)).to(dtype).to(device)


# ---- results: torchvision's own kernels against ours behind torchvision's ops ---------------


@pytest.mark.parametrize("n", [0, 1, 7, 300, 3000])
@pytest.mark.parametrize("thr", [0.0, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_same_kept_indices(device, seed, n, thr, dtype):
    boxes, scores = random_boxes(n, device, dtype), _scores(n, device, dtype)
    theirs = torchvision.ops.nms(boxes, scores, thr)
    with accelerate.torchvision_accelerated(), Calls("nms") as calls:
        ours = torchvision.ops.nms(boxes, scores, thr)
    assert calls.ours == 1 and calls.fallback == 0
    assert ours.dtype == torch.int64 and torch.equal(ours, theirs)


def _roi_case(device, dtype, channels_last, n=2, c=6, h=13, w=17, k=24, scale=0.5):
    x = torch.randn(n, c, h, w, dtype=dtype, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, random_rois(k, n, h, w, scale, dtype, device)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roi_align_forward_and_backward(device, seed, channels_last, sampling_ratio, aligned, dtype):
    x, rois = _roi_case(device, dtype, channels_last)
    args = ((3, 4), 0.5, sampling_ratio, aligned)
    grad = torch.randn(rois.size(0), x.size(1), 3, 4, dtype=dtype, device=device)

    def run():
        xg = x.detach().requires_grad_(True)
        out = torchvision.ops.roi_align(xg, rois, *args)
        return out, torch.autograd.grad(out, xg, grad)[0]

    out, gx = run()
    with accelerate.torchvision_accelerated(), Calls("roi_align") as fw, Calls("_roi_align_backward") as bw:
        out_ours, gx_ours = run()
    assert (fw.ours, bw.ours, fw.fallback, bw.fallback) == (1, 1, 0, 0)
    assert_same_as_torchvision(out_ours, out, device, x)
    assert_same_as_torchvision(gx_ours, gx, device, grad, size=max(x.shape[-2:]), terms=len(rois))


def test_roi_align_boxes_as_list_module_and_multiscale(device, seed):
    x = torch.randn(2, 4, 16, 20, device=device)
    boxes = [random_rois(k, 1, 16, 20, 0.5, device=device)[:, 1:] for k in (3, 5)]
    feats = {"p2": x, "p3": torch.randn(2, 4, 8, 10, device=device)}
    pooler = MultiScaleRoIAlign(["p2", "p3"], 5, 2)
    module = RoIAlign((5, 5), 0.5, 2, aligned=True)
    sizes = [(32, 40), (32, 40)]

    def run():
        return (torchvision.ops.roi_align(x, boxes, 5, 0.5, 2), module(x, boxes), pooler(feats, boxes, sizes))

    theirs = run()
    pooled = accelerate.kernel_calls().get("multiscale_roi_align", 0)
    with accelerate.torchvision_accelerated(), Calls("roi_align") as calls:
        ours = run()
    # the pooler's levels: one multilevel_roi_align call (tests/test_accelerate_models.py)
    assert calls.ours == 2 and calls.fallback == 0
    assert accelerate.kernel_calls()["multiscale_roi_align"] == pooled + 1
    for a, b in zip(ours, theirs):
        assert_same_as_torchvision(a, b, device, x)


def test_empty_inputs(device):
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    rois = torch.zeros(0, 5, device=device)
    with accelerate.torchvision_accelerated(), Calls("roi_align") as fw, Calls("_roi_align_backward") as bw:
        out = torchvision.ops.roi_align(x, rois, 2)
        assert out.shape == (0, 3, 2, 2)
        (gx,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(gx, torch.zeros_like(x))
        keep = torchvision.ops.nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5)
        assert keep.shape == (0,) and keep.dtype == torch.int64
    assert (fw.ours, bw.ours) == (1, 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_torchvisions_answers(device, seed, dtype):
    """nms: where torchvision's kernel takes the dtype on the device, ours runs (both compare in
    float32: same indices); where it refuses it (half nms on the CPU), the call stays
    torchvision's and raises its error. roi_align and its backward in float16 / bfloat16 stay
    torchvision's: it sums in the input's dtype, ours in float32 (a different answer)."""
    x, rois = _roi_case(device, dtype, False)
    x = x.abs()
    boxes, scores = random_boxes(50, device, dtype), _scores(50, device, dtype)
    grad = torch.ones(rois.size(0), 6, 7, 7, dtype=dtype, device=device)
    cases = [
        ("nms", lambda: TV.nms(boxes, scores, 0.5)),
        ("roi_align", lambda: TV.roi_align(x, rois, 0.5, 7, 7, -1, True)),
        ("_roi_align_backward", lambda: TV._roi_align_backward(grad, rois, 0.5, 7, 7, 2, 6, 13, 17, -1, True)),
    ]
    for op, fn in cases:
        try:
            theirs = fn()
        except RuntimeError as e:
            with accelerate.torchvision_accelerated(), Calls(op) as calls:
                with pytest.raises(RuntimeError) as raised:
                    fn()
            assert str(raised.value) == str(e) and (calls.ours, calls.fallback) == (0, 1)
            continue
        with accelerate.torchvision_accelerated(), Calls(op) as calls:
            ours = fn()
        assert (calls.ours, calls.fallback) == ((1, 0) if op == "nms" else (0, 1))
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_kept(device, seed, dtype):
    """torchvision's autocast kernels cast to float32 and reach our float32 kernels."""
    x, rois = _roi_case(device, torch.float32, False)
    x = x.to(dtype)
    boxes, scores = random_boxes(200, device, dtype), _scores(200, device)

    def run():
        with torch.autocast(device_type=device, dtype=dtype):
            return torchvision.ops.roi_align(x, rois, 7, 0.5, 2), torchvision.ops.nms(boxes, scores, 0.5)

    out, keep = run()
    with accelerate.torchvision_accelerated(), Calls("roi_align") as ra, Calls("nms") as nm:
        out_ours, keep_ours = run()
    assert (ra.ours, nm.ours) == (1, 1)
    assert out_ours.dtype == out.dtype == dtype
    assert_same_as_torchvision(out_ours, out, device, x.float())
    assert torch.equal(keep_ours, keep)


def test_double_backward_as_torchvision():
    """torchvision's autograd stays: a second derivative fails as it does without ours."""
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 5.0]], dtype=torch.float64)

    def second_derivative():
        out = torchvision.ops.roi_align(x, rois, 2, 1.0, 2)
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        g.sum().backward()

    with pytest.raises(RuntimeError) as theirs:
        second_derivative()
    with accelerate.torchvision_accelerated():
        with pytest.raises(RuntimeError) as ours:
            second_derivative()
    assert str(ours.value) == str(theirs.value)


# ---- calls our ops do not take: torchvision's kernel, its result or its error ---------------


def _bad_calls(device):
    x = torch.randn(1, 3, 8, 8, device=device)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]], device=device)
    boxes, scores = random_boxes(5, device), _scores(5, device)
    grad = torch.ones(1, 3, 2, 2, device=device)
    return [
        ("nms", lambda: TV.nms(boxes[:, :3], scores, 0.5)),
        ("nms", lambda: TV.nms(boxes, scores.double(), 0.5)),
        ("nms", lambda: TV.nms(boxes[0], scores, 0.5)),
        ("nms", lambda: TV.nms(boxes.int(), scores.int(), 0.5)),
        ("roi_align", lambda: TV.roi_align(x[0], rois, 1.0, 2, 2, -1, False)),
        ("roi_align", lambda: TV.roi_align(x, rois.double(), 1.0, 2, 2, -1, False)),
        ("roi_align", lambda: TV.roi_align(x, rois[:, :4], 1.0, 2, 2, -1, False)),
        ("roi_align", lambda: TV.roi_align(x.int(), rois.int(), 1.0, 2, 2, -1, False)),
        ("_roi_align_backward", lambda: TV._roi_align_backward(grad[0], rois, 1.0, 2, 2, 1, 3, 8, 8, -1, False)),
        ("_roi_align_backward",
         lambda: TV._roi_align_backward(grad, rois.double(), 1.0, 2, 2, 1, 3, 8, 8, -1, False)),
    ]


def test_bad_inputs_raise_torchvisions_errors(device):
    for op, fn in _bad_calls(device):
        with pytest.raises(Exception) as theirs:
            fn()
        with accelerate.torchvision_accelerated(), Calls(op) as calls:
            with pytest.raises(type(theirs.value)) as ours:
                fn()
        assert str(ours.value) == str(theirs.value)
        assert (calls.ours, calls.fallback) == (0, 1)


def test_arguments_outside_our_domain_run_torchvisions_kernel(device, seed):
    """torchvision takes a negative IoU threshold, a sampling ratio below -1, zero bins and a
    non-positive spatial scale; ours refuse them, so those calls keep torchvision's answers."""
    x, rois = _roi_case(device, torch.float32, False)
    boxes, scores = random_boxes(100, device), _scores(100, device)
    cases = [
        ("nms", lambda: TV.nms(boxes, scores, -0.5)),
        ("roi_align", lambda: TV.roi_align(x, rois, 0.5, 2, 2, -3, False)),
        ("roi_align", lambda: TV.roi_align(x, rois, 0.5, 0, 2, 2, False)),
        ("roi_align", lambda: TV.roi_align(x, rois, -0.5, 2, 2, 2, True)),
    ]
    for op, fn in cases:
        theirs = fn()
        with accelerate.torchvision_accelerated(), Calls(op) as calls:
            ours = fn()
        assert (calls.ours, calls.fallback) == (0, 1)
        assert torch.equal(ours, theirs)


# ---- every caller: names bound before the call, torch.ops, TorchScript ------------------------


def test_names_bound_before_the_call_run_ours(seed):
    # A library that bound torchvision's functions at its import, before the acceleration.
    lib = types.ModuleType("detectron_like")
    exec("from torchvision.ops import roi_align, nms\n"
         "def pool(x, rois):\n    return roi_align(x, rois, (7, 7), 0.25, 2, True)\n"
         "def keep(b, s):\n    return nms(b, s, 0.7)\n", lib.__dict__)
    x, rois = _roi_case("cpu", torch.float32, False, scale=0.25)
    boxes, scores = random_boxes(500), _scores(500, "cpu")
    pooled, kept = lib.pool(x, rois), lib.keep(boxes, scores)
    with accelerate.torchvision_accelerated(), Calls("roi_align") as ra, Calls("nms") as nm:
        assert torch.equal(lib.pool(x, rois), pooled) and torch.equal(lib.keep(boxes, scores), kept)
    assert (ra.ours, nm.ours) == (1, 1)
    with Calls("roi_align") as ra, Calls("nms") as nm:  # restored: torchvision's again
        lib.pool(x, rois), lib.keep(boxes, scores)
    assert (ra.ours, nm.ours, ra.fallback, nm.fallback) == (0, 0, 0, 0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_calling_torch_ops_torchvision_runs_ours(seed):
    @torch.jit.script
    def scripted(boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchvision.nms(boxes, scores, 0.5)

    scripted_tv = torch.jit.script(torchvision.ops.nms)
    boxes, scores = random_boxes(800), _scores(800, "cpu")
    kept = scripted(boxes, scores)
    with accelerate.torchvision_accelerated(), Calls("nms") as calls:
        assert torch.equal(scripted(boxes, scores), kept)
        assert torch.equal(scripted_tv(boxes, scores, 0.5), kept)
    assert calls.ours == 2
    with Calls("nms") as calls:
        assert torch.equal(scripted(boxes, scores), kept)
    assert calls.ours == 0


# ---- the switch: accelerate, undo, context manager --------------------------------------------


def test_accelerate_replaces_the_backend_kernels_and_the_undo_restores_them():
    kept = {(op, key): dispatched(op, key) for op in OPS for key in ("Meta", "AutocastCPU", "AutogradCPU")}
    keys = maskrcnn_fast.accelerate_torchvision()
    assert keys[0] == "CPU" and accelerate.is_accelerated()
    for op in OPS:
        for key in keys:
            assert dispatched(op, key) != TORCHVISION_KERNELS[(op, key)]
    # torchvision's autograd, autocast and Meta kernels stay.
    assert {k: dispatched(*k) for k in kept} == kept
    assert maskrcnn_fast.accelerate_torchvision() == keys  # idempotent
    accelerate.restore_torchvision()
    assert not accelerate.is_accelerated() and torchvision_kernels_active()
    accelerate.restore_torchvision()  # idempotent
    assert torchvision_kernels_active()
    boxes, scores = random_boxes(50), _scores(50, "cpu")
    with Calls("nms") as calls:
        torchvision.ops.nms(boxes, scores, 0.5)
    assert (calls.ours, calls.fallback) == (0, 0)


def test_context_manager_restores_on_exit_and_on_exception():
    boxes, scores = random_boxes(50), _scores(50, "cpu")
    with accelerate.torchvision_accelerated():
        assert accelerate.is_accelerated()
    assert torchvision_kernels_active()
    with pytest.raises(KeyError):
        with accelerate.torchvision_accelerated():
            raise KeyError("boom")
    assert not accelerate.is_accelerated() and torchvision_kernels_active()
    # Nested in an explicit call: the outer acceleration stays.
    maskrcnn_fast.accelerate_torchvision()
    with accelerate.torchvision_accelerated():
        pass
    assert accelerate.is_accelerated()
    with Calls("nms") as calls:
        torchvision.ops.nms(boxes, scores, 0.5)
    assert calls.ours == 1


@pytest.mark.filterwarnings("ignore:`create_unbacked_symint` is deprecated:FutureWarning")
def test_torch_compile_traces_torchvisions_meta_kernels_and_runs_ours(seed):
    """torch.compile traces torchvision's ops with torchvision's Meta kernels (kept) and the
    compiled graph calls the ops through the dispatcher: ours, with torchvision's answers."""
    x, rois = _roi_case("cpu", torch.float32, True)
    boxes, scores = random_boxes(300), _scores(300, "cpu")

    def fn(x, rois, boxes, scores):
        return torchvision.ops.roi_align(x, rois, (3, 3), 0.5, 2, True), torchvision.ops.nms(boxes, scores, 0.5)

    pooled, kept = fn(x, rois, boxes, scores)
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=False)
    with accelerate.torchvision_accelerated(), Calls("roi_align") as ra, Calls("nms") as nm:
        pooled_ours, kept_ours = compiled(x, rois, boxes, scores)
    assert ra.ours >= 1 and nm.ours >= 1
    assert_same_as_torchvision(pooled_ours, pooled, "cpu")
    assert torch.equal(kept_ours, kept)
