"""Static-shape inference, torch.compile (graph breaks) and CUDA-graph capture of the model.

Small: ResNet-18 FPN with random weights, images of 200-320 px, box_score_thresh=0 so that
random weights still give detections. Dynamo runs with backend="eager": graph breaks do not
depend on the backend, and inductor on the whole model takes minutes on 2 cores.
"""
import copy
import os

import pytest
import torch

import maskrcnn_fast
from maskrcnn_fast.models import maskrcnn_resnet_fpn

from support import CUDA_AVAILABLE, NO_CUDA_REASON
from support.models import SMALL

SIZES = [(200, 260), (310, 240)]
PKG = os.path.dirname(maskrcnn_fast.__file__)


def _images(seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g).to(device) for h, w in SIZES]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = maskrcnn_resnet_fpn(18, **SMALL).eval()
    with torch.no_grad():
        m(_images())  # sets the poolers' lazily inferred scales (a host read, once)
    return m


def _assert_same(got, want, exact_boxes=True, mask_atol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w) == {"boxes", "labels", "scores", "masks"}
        assert g["boxes"].shape[0] > 0
        for k in ("boxes", "labels", "scores"):
            assert g[k].dtype == w[k].dtype and g[k].shape == w[k].shape, k
        assert torch.equal(g["labels"], w["labels"])
        if exact_boxes:
            assert torch.equal(g["boxes"], w["boxes"])
            assert torch.equal(g["scores"], w["scores"])
        else:
            torch.testing.assert_close(g["boxes"], w["boxes"])
            torch.testing.assert_close(g["scores"], w["scores"])
        assert g["masks"].shape == w["masks"].shape
        # the mask head runs on D rows instead of K: its convolutions may round differently
        torch.testing.assert_close(g["masks"], w["masks"], atol=mask_atol, rtol=1e-4)


def test_static_shapes_equal_dynamic(model):
    images = _images(seed=3)
    with torch.no_grad():
        want = model(images)
        static = copy.copy(model)
        static.static_shapes = True
        got = static(images)
    _assert_same(got, want)


def test_forward_padded_shapes(model):
    images = _images(seed=4)
    d = model.roi_heads.detections_per_img
    with torch.no_grad():
        il, _ = model.transform(images, None)
        out = model.forward_padded(il.tensors, il.image_sizes, SIZES)
    assert out["boxes"].shape == (2, d, 4) and out["scores"].shape == (2, d)
    assert out["labels"].shape == (2, d) and out["counts"].shape == (2,)
    assert [tuple(m.shape) for m in out["masks"]] == [(d, 1, h, w) for h, w in SIZES]
    counts = out["counts"].tolist()
    for i, k in enumerate(counts):
        assert torch.all(out["scores"][i, k:] == 0) and torch.all(out["labels"][i, k:] == 0)


def _break_frames(explained):
    """(reason, [(file, function)]) of each graph break."""
    return [
        (str(b.reason), [(os.path.abspath(f.filename), f.name) for f in b.user_stack])
        for b in explained.break_reasons
    ]


def _in_ops(frames):
    return [f for f in frames if f[0].startswith(os.path.join(PKG, "ops"))]


@pytest.mark.parametrize("static_shapes", [False, True])
def test_no_graph_break_in_our_ops(model, static_shapes):
    torch._dynamo.reset()
    m = copy.copy(model)
    m.static_shapes = static_shapes
    with torch.no_grad():
        explained = torch._dynamo.explain(m)(_images(seed=5))
    breaks = _break_frames(explained)
    for reason, frames in breaks:
        assert not _in_ops(frames), (reason, frames)
        assert "maskrcnn_fast" not in reason, (reason, frames)
    if static_shapes:
        # only the hand-over to the user (counts read on the host) may break the graph
        for reason, frames in breaks:
            assert any(name == "compact" for _, name in frames), (reason, frames)
    torch._dynamo.reset()


def test_compiled_equals_eager(model):
    """The default (dynamic) forward; the static one: test_static_shapes_fullgraph_*."""
    torch._dynamo.reset()
    m = model
    images = _images(seed=6)
    with torch.no_grad():
        want = m(images)
        got = torch.compile(m, backend="eager")(images)
    torch._dynamo.reset()
    _assert_same(got, want)


# ---- CUDA graphs ---------------------------------------------------------------------------------


def test_capture_needs_cuda(model):
    with pytest.raises(RuntimeError, match="CUDA"):
        maskrcnn_fast.capture_cuda_graph(model, _images())


def test_captured_rejects_other_sizes(model):
    """The size check of the replay callable, without a GPU (a stand-in for the graph)."""
    from maskrcnn_fast.inference import CapturedMaskRCNN

    images = _images()
    captured = CapturedMaskRCNN(
        model, None, [tuple(im.shape) for im in images], [], None, {}, torch.device("cpu")
    )
    with pytest.raises(ValueError, match=r"images\[1\] has shape"):
        captured([images[0], torch.rand(3, 100, 120)])
    with pytest.raises(ValueError, match="captured batch size"):
        captured(images[:1])
    with pytest.raises(TypeError, match="images must be a list"):
        captured(images[0])


class _EagerGraph:
    """Stands in for a CUDAGraph on the CPU: replay() recomputes into the static outputs."""

    def __init__(self, fn, outputs):
        self.fn, self.outputs = fn, outputs

    def replay(self):
        new = self.fn()
        for key, v in new.items():
            if isinstance(v, list):
                for dst, src in zip(self.outputs[key], v):
                    dst.copy_(src)
            else:
                self.outputs[key].copy_(v)


def test_captured_call_path_on_cpu(model):
    """The replay callable's input copy, replay and compaction, with an eager stand-in graph."""
    from maskrcnn_fast.inference import CapturedMaskRCNN

    example = _images(seed=11)
    with torch.no_grad():
        il, _ = model.transform(example, None)
        batch = il.tensors.clone()
        consts = model.static_constants(il.image_sizes, SIZES, batch.device)
        fn = lambda: model.forward_padded(batch, il.image_sizes, SIZES, consts)  # noqa: E731
        outputs = fn()
    captured = CapturedMaskRCNN(
        model, _EagerGraph(fn, outputs), [tuple(im.shape) for im in example], il.image_sizes, batch, outputs,
        torch.device("cpu"),
    )
    first_images, second_images = _images(seed=12), _images(seed=13)
    first = captured(first_images)
    second = captured(second_images)
    with torch.no_grad():
        _assert_same(first, model(first_images))  # not overwritten by the second replay
        _assert_same(second, model(second_images))


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_AVAILABLE, reason=NO_CUDA_REASON)
def test_cuda_graph_replay_equals_eager(model):
    m = copy.deepcopy(model).cuda()
    captured = maskrcnn_fast.capture_cuda_graph(m, _images(seed=7, device="cuda"))
    with pytest.raises(ValueError, match="captured for"):
        captured([im[:, :-1] for im in _images(seed=7, device="cuda")])
    static = copy.copy(m)
    static.static_shapes = True
    results = []
    for seed in (8, 9):
        images = _images(seed=seed, device="cuda")
        got = captured(images)
        with torch.no_grad():
            want_static, want = static(images), m(images)
        # the same kernels on the same shapes as the eager static-shape forward
        _assert_same(got, want_static, exact_boxes=False)
        # the dynamic forward's mask head runs on fewer rows: cuDNN may pick other algorithms
        # (TF32 by default), hence the looser masks
        _assert_same(got, want, exact_boxes=False, mask_atol=2e-3)
        results.append((got, want_static))
    # the first replay's outputs are copies: the second replay left them alone
    _assert_same(results[0][0], results[0][1], exact_boxes=False)


def test_static_shapes_fullgraph_with_scalar_capture(model):
    """With capture_scalar_outputs the hand-over's counts become unbacked sizes: one graph,
    no break at all (fullgraph=True)."""
    torch._dynamo.reset()
    m = copy.copy(model)
    m.static_shapes = True
    images = _images(seed=10)
    with torch.no_grad(), torch._dynamo.config.patch(capture_scalar_outputs=True):
        want = m(images)
        got = torch.compile(m, backend="eager", fullgraph=True)(images)
    torch._dynamo.reset()
    _assert_same(got, want)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_AVAILABLE, reason="no GPU, or the CUDA kernels are not built")
def test_cuda_graph_keeps_what_it_reads_alive(model):
    """Tensors made before capture (image sizes, scale ratios) are read by every replay: after
    other allocations that could reuse their memory, a replay still equals the eager result."""
    import gc

    m = copy.deepcopy(model).cuda()
    captured = maskrcnn_fast.capture_cuda_graph(m, _images(seed=3, device="cuda"))
    assert captured.constants is not None
    gc.collect()
    torch.cuda.empty_cache()
    junk = [torch.full((1 << 16,), 12345.0, device="cuda") for _ in range(64)]  # reuse freed blocks
    images = _images(seed=4, device="cuda")
    static = copy.copy(m)
    static.static_shapes = True
    with torch.no_grad():
        _assert_same(captured(images), static(images), exact_boxes=False)
    del junk


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_AVAILABLE, reason="no GPU, or the CUDA kernels are not built")
def test_cuda_graph_under_autocast(model):
    """Captured under autocast: the low-precision weight copies belong to the graph (autocast's
    cache is off during capture), so replays after the autocast block exited still read valid
    memory; a replay outside the capture's autocast state is refused."""
    m = copy.deepcopy(model).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        captured = maskrcnn_fast.capture_cuda_graph(m, _images(seed=5, device="cuda"))
    assert captured.autocast == (True, torch.float16)
    junk = [torch.full((1 << 16,), 7.0, device="cuda") for _ in range(64)]
    images = _images(seed=6, device="cuda")
    with pytest.raises(RuntimeError, match="autocast"):
        captured(images)
    static = copy.copy(m)
    static.static_shapes = True
    with torch.autocast("cuda", dtype=torch.float16), torch.no_grad():
        got, want = captured(images), static(images)
    assert [len(r["boxes"]) for r in got] == [len(r["boxes"]) for r in want]
    for g, w in zip(got, want):
        assert torch.equal(g["labels"], w["labels"])
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=1e-2, atol=0.5)
    del junk
