import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import cpu_features  # noqa: E402
from common import bench_device  # noqa: E402


def pytest_benchmark_update_machine_info(config, machine_info):
    """The CPU's instruction sets and the ISA limits in force, into the JSON's machine_info:
    report.py prints them beside the table (they decide which oneDNN kernels ran)."""
    machine_info["cpu_features"] = cpu_features.features()


@pytest.fixture(scope="session")
def device():
    """The device the whole suite times: cuda where present, else cpu (MF_BENCH_DEVICE)."""
    return bench_device()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """MF_BENCH_STREAM=PATH: each finished benchmark appended to PATH as one JSON line, as it
    finishes. pytest-benchmark writes its JSON only when the session ends, so a run killed by
    a timeout (scripts/gpu_check.sh) would leave nothing; benchmarks/report.py reads either."""
    yield
    path = os.environ.get("MF_BENCH_STREAM")
    bench = getattr(item, "funcargs", {}).get("benchmark")
    meta = getattr(bench, "stats", None)
    if not path or meta is None or not meta.stats.data:
        return
    with open(path, "a") as f:
        f.write(json.dumps(meta.as_dict(include_data=False), default=str) + "\n")
