"""The deployment benchmark's implementations timed in interleaved rounds (each round runs every
implementation once, in a rotating order), for a shared machine whose load changes within a
run: pytest-benchmark times one implementation after the other, so a load swing lands on one
of them; here every implementation sees it. Reuses bench_deploy.py's cached package and ONNX
file (run `make bench` or bench_deploy.py first, or this builds them).

    python benchmarks/deploy_interleaved.py [--rounds 5] [--threads N]

Prints the median and the minimum of each, and their speed-ups over torchvision's model.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_deploy  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    import maskrcnn_fast

    s = bench_deploy.make_setup()
    s["fused_optimized"] = maskrcnn_fast.optimize_for_inference(s["fused"])
    runners = {impl: bench_deploy._runner(impl, s) for impl in bench_deploy.IMPLS}
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
