"""Deployment on the CPU: the model exported for 800x1088 at batch 1, run as an AOTInductor .pt2
package (``pt2``) and by ONNX Runtime (``onnxruntime``), against our eager model (``fused``) and
torchvision's (``torchvision``), same random R50-FPN weights (seed 0, as bench_model.py), same
image, in group ``model_deploy[bs1]``.

The package and the ONNX file are built once and kept in $MF_BENCH_CACHE (default
benchmarks/out/deploy), named after the torch release and a hash of the package's sources:
compiling the package takes about 6 minutes on 2 cores, exporting ONNX about a minute.
ONNX Runtime's column is left out when onnxruntime is not installed; CUDA runs skip the group
(the package is compiled for the CPU).

On a shared machine whose load changes within a run, pytest-benchmark's one-after-the-other
timing lets a load swing land on one implementation; run this file as a script instead:

    python benchmarks/bench_deploy.py [--rounds 5] [--threads N]

to time them in interleaved rounds (each round runs every implementation once, in a rotating
order, plus our eager model after optimize_for_inference) and print the median and the minimum
of each with their speed-ups over torchvision's model.
"""
import argparse
import hashlib
import os
import statistics
import sys
import time

import pytest
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import _sync  # noqa: E402
from maskrcnn_fast.models import maskrcnn_resnet50_fpn  # noqa: E402

H, W = 800, 1088
ROUNDS = 3
HERE = os.path.dirname(os.path.abspath(__file__))
IMPLS = ["fused", "pt2", "onnxruntime", "torchvision"]


def _cache_dir():
    import maskrcnn_fast

    src = os.path.dirname(maskrcnn_fast.__file__)
    h = hashlib.sha256()
    for sub in ("deploy", "models", "ops"):
        for root, _, files in sorted(os.walk(os.path.join(src, sub))):
            for f in sorted(files):
                if f.endswith(".py"):
                    with open(os.path.join(root, f), "rb") as fh:
                        h.update(fh.read())
    base = os.environ.get("MF_BENCH_CACHE", os.path.join(HERE, "out", "deploy"))
    return os.path.join(base, f"torch{torch.__version__.split('+')[0]}-{h.hexdigest()[:12]}")


@pytest.fixture(scope="module")
def setup(device):
    if str(device) != "cpu":
        pytest.skip("the deployment benchmark is the CPU's")
    return make_setup()


def make_setup():
    """The models (same random weights), the image and the cache folder."""
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    ours = maskrcnn_resnet50_fpn()
    ours.load_state_dict(tv.state_dict())
    ours.eval()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, H, W, generator=g)
    return {"torchvision": tv, "fused": ours, "image": image, "cache": _cache_dir()}


def _runner(impl, s):
    import maskrcnn_fast
    from maskrcnn_fast.deploy import compile_package, load_package

    x = s["image"]
    os.makedirs(s["cache"], exist_ok=True)
    if impl in ("fused", "torchvision"):
        model = s[impl]
        return lambda: model(list(x))
    if impl == "pt2":
        path = os.path.join(s["cache"], f"r50_{H}x{W}.pt2")
        if not os.path.exists(path):
            compile_package(maskrcnn_fast.export(s["fused"], x), path)
        pkg = load_package(path)
        return lambda: pkg(x)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from maskrcnn_fast.deploy.onnx import OnnxMaskRCNN, export_onnx

    path = os.path.join(s["cache"], f"r50_{H}x{W}.onnx")
    if not os.path.exists(path):
        export_onnx(s["fused"], path, x)
    session = OnnxMaskRCNN(path)
    return lambda: session(x)


@pytest.mark.parametrize("impl", IMPLS)
def bench_model_deploy(benchmark, device, setup, impl):
    fn = _runner(impl, setup)

    def timed():
        with torch.no_grad():
            out = fn()
        _sync(device)
        return out

    benchmark.group = "model_deploy[bs1]"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = str(device)
    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = 1 / benchmark.stats.stats.median


def main(argv=None):
    p = argparse.ArgumentParser(description="the deployment benchmark in interleaved rounds")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    import maskrcnn_fast

    s = make_setup()
    s["fused_optimized"] = maskrcnn_fast.optimize_for_inference(s["fused"])
    runners = {impl: _runner(impl, s) for impl in IMPLS}
    x = s["image"]
    runners["fused_optimized"] = lambda: s["fused_optimized"](list(x))
    names = list(runners)
    times = {n: [] for n in names}
    with torch.no_grad():
        for n in names:  # warm-up
            runners[n]()
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                t = time.perf_counter()
                runners[n]()
                times[n].append(time.perf_counter() - t)
            print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)
    tv_med, tv_min = statistics.median(times["torchvision"]), min(times["torchvision"])
    print(f"\n{'impl':16s} {'median':>9s} {'min':>9s} {'tv/impl (median)':>17s} {'tv/impl (min)':>14s}")
    for n in names:
        med, mn = statistics.median(times[n]), min(times[n])
        print(f"{n:16s} {med:8.3f}s {mn:8.3f}s {tv_med / med:16.2f}x {tv_min / mn:13.2f}x")


if __name__ == "__main__":
    main()
