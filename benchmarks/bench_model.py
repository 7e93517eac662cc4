"""End-to-end Mask R-CNN R50-FPN inference: images of 800x1088 (min_size 800, max_size 1333, so
no resize), batch 1 and 2, eval mode, no_grad.

Every impl runs the same random weights (torchvision's initialisation, seed 0): ``fused`` and
``torch`` are maskrcnn_fast's model on our kernels / our pure-PyTorch ops, ``torchvision`` is
torchvision's maskrcnn_resnet50_fpn with the same state_dict. The ``model_optimized`` groups run
``fused`` and ``torch`` through ``maskrcnn_fast.optimize_for_inference`` (batch norms folded, the
convolutions' memory format chosen by timing both on this machine at the first image size)
against torchvision's model as it is; ``model_optimized_nchw[bs1]`` and
``model_optimized_channels_last[bs1]`` fix the format (fused only), beside torchvision again. With these weights about three
class scores per proposal pass box_score_thresh=0.05, so every image gets its 100 detections and
100 masks, as with trained weights. ``extra_info`` records images/s and the detections per image.
"""
import pytest
import torch
import torchvision

from bench_train import LAYOUTS, record_layout
from common import IMPLS, _sync
from maskrcnn_fast import optimize_for_inference
from maskrcnn_fast.models import maskrcnn_resnet50_fpn

H, W = 800, 1088
# One forward takes seconds on a CPU: a fixed 1 warm-up + 3 timed rounds per benchmark (not
# common.run's budget sizing, which adds a second warm-up), so the file finishes in ~4 minutes.
ROUNDS = 3


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()


def _model(impl, state, device, optimized=False, channels_last=None):
    if impl == "torchvision":
        model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    else:
        model = maskrcnn_resnet50_fpn(ops=impl)
    model.load_state_dict(state)
    model = model.eval().to(device)
    if optimized and impl != "torchvision":
        model = optimize_for_inference(model, channels_last=channels_last)
    return model


def _bench(benchmark, device, state, impl, bs, optimized, layout=""):
    model = _model(impl, state, device, optimized, LAYOUTS[layout])
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, H, W, generator=g).to(device) for _ in range(bs)]

    def fn():
        with torch.no_grad():
            out = model(images)
        _sync(device)
        return out

    benchmark.group = f"model{'_optimized' if optimized else ''}{layout}[bs{bs}]"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = str(device)
    out = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["detections_per_image"] = [int(o["boxes"].shape[0]) for o in out]
    benchmark.extra_info["images_per_s"] = bs / benchmark.stats.stats.median
    record_layout(benchmark, model)


# impl varies fastest: the three impls of a group run back to back, under the same machine load
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bs", [1, 2])
def bench_model(benchmark, device, state, impl, bs):
    _bench(benchmark, device, state, impl, bs, optimized=False)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bs", [1, 2])
def bench_model_optimized(benchmark, device, state, impl, bs):
    _bench(benchmark, device, state, impl, bs, optimized=True)


# both formats fixed, at batch 1: which one this machine prefers, beside the automatic choice
@pytest.mark.parametrize("impl", ["fused", "torchvision"])
@pytest.mark.parametrize("layout", ["_nchw", "_channels_last"], ids=["nchw", "channels_last"])
def bench_model_optimized_layout(benchmark, device, state, impl, layout):
    _bench(benchmark, device, state, impl, 1, optimized=True, layout=layout)


# ---- CUDA only: fp32 and autocast fp16, batch 1 and 8, with and without CUDA-graph replay ------
def _bench_cuda(benchmark, state, impl, bs, amp, graph):
    import maskrcnn_fast

    model = _model(impl, state, "cuda")
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, H, W, generator=g).cuda() for _ in range(bs)]
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=amp)
    if graph and impl == "fused":
        with torch.no_grad(), autocast:
            run_model = maskrcnn_fast.capture_cuda_graph(model, images)
    else:
        run_model = model

    def fn():
        with torch.no_grad(), autocast:
            out = run_model(images)
        torch.cuda.synchronize()
        return out

    benchmark.group = f"model_cuda[{'amp' if amp else 'fp32'}{'+graph' if graph else ''},bs{bs}]"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = "cuda"
    benchmark.pedantic(fn, rounds=10, iterations=1, warmup_rounds=2)
    benchmark.extra_info["images_per_s"] = bs / benchmark.stats.stats.median


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bs", [1, 8])
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("graph", [False, True])
def bench_model_cuda(benchmark, device, state, impl, bs, amp, graph):
    if not str(device).startswith("cuda"):
        pytest.skip("CUDA benchmark")
    if graph and impl == "torch":
        # Only the fused path has static shapes. In the +graph groups torchvision runs eagerly:
        # the goal compares our replay with torchvision as users run it, under the same autocast.
        pytest.skip("CUDA-graph replay is the fused path's")
    _bench_cuda(benchmark, state, impl, bs, amp, graph)
