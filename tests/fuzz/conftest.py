"""Hypothesis profiles and the example counter of the differential fuzz tests.

Profiles: "ci" (default: a bounded, derandomized number of examples per test, so ``make test``
stays fast) and "fuzz" (many examples, random seeds; ``make fuzz``). Select one with the
environment variable MF_FUZZ_PROFILE or ``pytest --fuzz-profile=NAME``; MF_FUZZ_EXAMPLES
overrides the number of examples of the selected profile.

Every fuzz test's body is wrapped to count the examples hypothesis runs (shrinking included)
and how many of them raised; the terminal summary prints one row per test, and
``--fuzz-json=PATH`` writes the same table as JSON.
"""
import json
import os
import time

import pytest
from hypothesis import HealthCheck, Phase, settings

from maskrcnn_fast import emulated

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
             HealthCheck.differing_executors]
_N = os.environ.get("MF_FUZZ_EXAMPLES")
settings.register_profile(
    "ci", max_examples=int(_N or 30), derandomize=True, deadline=None,
    suppress_health_check=_SUPPRESS, print_blob=True, database=None,
)
settings.register_profile(
    "fuzz", max_examples=int(_N or 1000), derandomize=False, deadline=None,
    suppress_health_check=_SUPPRESS, print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink], database=None,
)
settings.load_profile(os.environ.get("MF_FUZZ_PROFILE", "ci"))

_STATS = {}  # nodeid -> dict(examples, raised, seconds, outcome)


def pytest_addoption(parser):
    group = parser.getgroup("maskrcnn_fast fuzz")
    group.addoption("--fuzz-profile", default=None, help="hypothesis profile: ci or fuzz")
    group.addoption("--fuzz-json", default=None, help="write the examples table to this file")


def pytest_configure(config):
    name = config.getoption("--fuzz-profile", default=None)
    if name:
        settings.load_profile(name)


def _wrap(item):
    inner_owner = getattr(item.obj, "hypothesis", None)
    if inner_owner is None:
        return
    inner = inner_owner.inner_test
    stats = _STATS.setdefault(item.nodeid, dict(examples=0, raised=0, seconds=0.0, outcome="?"))

    def counted(*args, **kwargs):
        stats["examples"] += 1
        try:
            return inner(*args, **kwargs)
        except BaseException as e:  # noqa: B036
            if not (type(e).__module__.startswith("hypothesis") or isinstance(e, pytest.skip.Exception)):
                stats["raised"] += 1
            raise

    inner_owner.inner_test = counted


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if "/fuzz/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("test_fuzz"):
            _wrap(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    t0 = time.perf_counter()
    yield
    if item.nodeid in _STATS:
        _STATS[item.nodeid]["seconds"] += time.perf_counter() - t0


def pytest_runtest_logreport(report):
    if report.when == "call" and report.nodeid in _STATS:
        _STATS[report.nodeid]["outcome"] = report.outcome


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = [(k, v) for k, v in _STATS.items() if v["examples"]]
    if not rows:
        return
    tr = terminalreporter
    profile = settings._current_profile
    tr.section(f"fuzz examples (hypothesis profile {profile!r})")
    width = max(len(k.split("::")[-1]) for k, _ in rows)
    tr.write_line(f"{'test':<{width}}  {'examples':>8}  {'raised':>6}  {'seconds':>7}  outcome")
    for k, v in rows:
        tr.write_line(f"{k.split('::')[-1]:<{width}}  {v['examples']:>8}  {v['raised']:>6}  "
                      f"{v['seconds']:>7.1f}  {v['outcome']}")
    total = sum(v["examples"] for _, v in rows)
    failed = sum(v["outcome"] == "failed" for _, v in rows)
    tr.write_line(f"total: {total} examples in {len(rows)} tests, {failed} failing tests")
    path = config.getoption("--fuzz-json", default=None)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump(dict(profile=profile, total_examples=total, failing_tests=failed,
                           tests={k: v for k, v in rows}), f, indent=1)


@pytest.fixture(autouse=True, params=[
    "native",
    pytest.param("emu", marks=[pytest.mark.emu, pytest.mark.skipif(not emulated.available(),
                                                                   reason="no emulated CUDA kernels")]),
])
def kernels(request):
    """Every fuzz test runs twice: on the kernels of its drawn device, and with the CPU tensors'
    ops on the emulated CUDA kernels (maskrcnn_fast.emulated): make fuzz fuzzes the CUDA code
    without a GPU."""
    if request.param == "emu":
        name = request.node.originalname
        if name.endswith("_errors") or "bad_batch_index" in name:
            # Argument checks are one function for both devices (the CPU run tests it), and the
            # data-dependent ones become in-kernel guards on CUDA: tests/test_cuda_matches_cpu.py.
            pytest.skip("input checks: tested on the native kernels")
        with emulated.cuda():
            yield request.param
    else:
        yield request.param
