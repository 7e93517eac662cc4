"""Shared helpers of the benchmark suite: the device it runs on and one timing call.

Each benchmark is one pytest-benchmark test in a group named after the op and its size
(``nms[4k]``); ``extra_info['impl']`` says which implementation it times: ``fused`` (our
kernels), ``torch`` (maskrcnn_fast.ops.reference) or ``torchvision``.
"""
import os
import time

import torch

IMPLS = ["fused", "torch", "torchvision"]


def bench_device():
    """MF_BENCH_DEVICE if set, else cuda when a GPU and our CUDA kernels are there, else cpu."""
    dev = os.environ.get("MF_BENCH_DEVICE")
    if dev:
        return dev
    import maskrcnn_fast

    if torch.cuda.is_available() and maskrcnn_fast.build_info()["cuda_kernels"]:
        return "cuda"
    return "cpu"


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run(benchmark, group, impl, fn, device, budget_s=None):
    """Times ``fn()`` under ``group`` for ``impl``; rounds are sized so that each benchmark
    takes about ``budget_s`` seconds (MF_BENCH_BUDGET, default 1.0)."""
    budget_s = float(os.environ.get("MF_BENCH_BUDGET", 1.0)) if budget_s is None else budget_s
    benchmark.group = group
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = str(device)

    def timed():
        out = fn()
        _sync(device)
        return out

    t0 = time.perf_counter()
    timed()  # warm-up: lazy init, allocator, caches
    once = max(time.perf_counter() - t0, 1e-6)
    rounds = int(min(max(budget_s / once, 3), 200))
    return benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
