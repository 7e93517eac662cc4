"""The pytest plugin of scripts/gpu_check.sh (loaded with ``-p gpu_check_plugin``, scripts/ on
PYTHONPATH): results that survive a timeout or a crash, a stop at a sticky CUDA error, the
rehearsal's selection and a test-only planted fault. Without its variables it does nothing.

  MF_RESULTS=PATH      one JSON line per event, appended and flushed as it happens: a test's
                       start ({"event": "start"}) and its outcome ({"outcome", "seconds"}), so a
                       group killed by its budget keeps what it finished and a crashed group
                       shows its last test (started, never finished)
  MF_GROUP=NAME        the group written into each line (and what MF_PLANT_FAULT may name)
  MF_REHEARSE_PER_FILE=N   the rehearsal (gpu_check.sh --rehearse, no GPU): each selected CUDA
                       case is replaced by its twin on the emulated kernels ("emu") or the CPU
                       (same test, same other parameters), a case without one stays (it skips
                       or runs on what it finds), and only the first N per file are kept
  MF_RESUME=1          a group taken up again after a crash or a sticky error: every test of
                       MF_GROUP already in MF_RESULTS (finished or not) is left out
  MF_PLANT_FAULT=[KIND:]TARGET[,...]   test-only: at the first test of group TARGET (or of the
                       test file or folder TARGET, e.g. tests/test_nms.py) the process aborts, as a dying CUDA
                       context does (KIND abort, the default); "sticky:" makes that test and
                       every later one raise CUDA's illegal-address error, as a sticky error
                       does; "hang:" makes that test never return, as a kernel stuck in a loop

``python scripts/gpu_check_plugin.py summary PATH [GROUP]`` prints one line: the counts, the
test that started and never finished and the one that hit a sticky error, if any; ``counts``
only the counts; ``last PATH GROUP`` the test that never finished.
"""
import json
import os
import re
import sys
import time

import pytest

# A kernel fault that leaves the CUDA context unusable: every later CUDA call in the process
# fails, so the rest of the group would only repeat it.
STICKY = re.compile(r"illegal memory access|device-side assert|unspecified launch failure|misaligned address"
                    r"|illegal instruction|CUDA error: an illegal")

_session = None
_sticky_planted = False
_t0 = {}


def _write(record):
    path = os.environ.get("MF_RESULTS")
    if not path:
        return
    record = {"group": os.environ.get("MF_GROUP", ""), **record}
    # Opened per line: a process killed at any point leaves every line before it whole.
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def pytest_sessionstart(session):
    global _session
    _session = session


def pytest_runtest_logstart(nodeid, location):
    _t0[nodeid] = time.monotonic()
    _write({"nodeid": nodeid, "event": "start"})


def pytest_runtest_logreport(report):
    # One outcome per test: the call's, or setup's when it failed or skipped; a teardown
    # error adds an "error" line.
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = report.outcome
        if report.when == "setup" and outcome == "failed":
            outcome = "error"
        if hasattr(report, "wasxfail"):
            outcome = "xpassed" if outcome == "passed" else "xfailed"
    elif report.when == "teardown" and report.outcome == "failed":
        outcome = "error"
    else:
        return
    secs = time.monotonic() - _t0.get(report.nodeid, time.monotonic())
    _write({"nodeid": report.nodeid, "outcome": outcome, "seconds": round(secs, 4)})
    if outcome in ("failed", "error") and STICKY.search(str(report.longrepr)):
        _write({"nodeid": report.nodeid, "event": "sticky"})
        if _session is not None:
            _session.shouldstop = f"sticky CUDA error in {report.nodeid}: the rest of this group is not run"


def _plant_target(item):
    if os.environ.get("MF_RESUME", "0") not in ("", "0"):
        return None  # a fresh process, as a fresh CUDA context: the planted fault is behind it
    path = item.nodeid.split("::")[0]
    for plant in filter(None, os.environ.get("MF_PLANT_FAULT", "").split(",")):
        kind, _, target = plant.rpartition(":")
        if target in (os.environ.get("MF_GROUP"), path) or path.startswith(target.rstrip("/") + "/"):
            return kind or "abort"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    global _sticky_planted
    kind = None if _sticky_planted else _plant_target(item)
    if kind == "abort":
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a planted crash leaves no core file
        os.abort()
    if kind == "hang":
        while True:  # as a kernel that never returns: only the step's budget ends it
            time.sleep(1)
    if kind == "sticky" or _sticky_planted:
        _sticky_planted = True
        raise RuntimeError("CUDA error: an illegal memory access was encountered (planted by MF_PLANT_FAULT)")


def _device_param(item):
    for name, value in getattr(getattr(item, "callspec", None), "params", {}).items():
        text = str(value)
        if text in ("cpu", "emu", "cuda") or text.startswith("cuda:"):
            return name, "cuda" if text.startswith("cuda") else text
    return None, None


def _twin_key(item):
    name, _ = _device_param(item)
    params = getattr(getattr(item, "callspec", None), "params", {})
    rest = tuple(sorted((k, repr(v)) for k, v in params.items() if k != name))
    return item.nodeid.split("::")[0], getattr(item, "originalname", item.name), name, rest


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(session, config, items):
    everything = list(items)
    yield
    _rehearsal_selection(config, everything, items)
    if os.environ.get("MF_RESUME", "0") not in ("", "0") and os.environ.get("MF_RESULTS"):
        done = set()
        if os.path.exists(os.environ["MF_RESULTS"]):
            with open(os.environ["MF_RESULTS"]) as f:
                for line in f:
                    r = json.loads(line)
                    if r.get("group") == os.environ.get("MF_GROUP", ""):
                        done.add(r["nodeid"])
        left_out = [i for i in items if i.nodeid in done]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [i for i in items if i.nodeid not in done]


def _rehearsal_selection(config, everything, items):
    per_file = os.environ.get("MF_REHEARSE_PER_FILE")
    if not per_file:
        return
    twins = {}
    for item in everything:
        _, dev = _device_param(item)
        if dev in ("cpu", "emu"):
            twins.setdefault(_twin_key(item), {})[dev] = item
    chosen, seen, counts = [], set(), {}
    for item in items:
        _, dev = _device_param(item)
        if dev == "cuda":
            found = twins.get(_twin_key(item), {})
            item = found.get("emu") or found.get("cpu") or item
        path = item.nodeid.split("::")[0]
        if item.nodeid in seen or counts.get(path, 0) >= int(per_file):
            continue
        seen.add(item.nodeid)
        counts[path] = counts.get(path, 0) + 1
        chosen.append(item)
    was_selected = {id(i) for i in items}
    dropped = [i for i in everything if id(i) in was_selected and i.nodeid not in seen]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = chosen


def summary(path, group=None):
    """The counts of a results file (one group's, or all), the tests that started and never
    finished and those that hit a sticky CUDA error."""
    counts, started, finished, sticky = {}, [], set(), []
    try:
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        lines = []
    for r in lines:
        if group is not None and r.get("group") != group:
            continue
        if r.get("event") == "start":
            started.append(r["nodeid"])
        elif r.get("event") == "sticky":
            sticky.append(r["nodeid"])
        else:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
            finished.add(r["nodeid"])
    order = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]
    text = ", ".join(f"{counts.get(k, 0)} {k}" for k in order[:4])
    text += "".join(f", {counts[k]} {k}" for k in order[4:] if counts.get(k))
    unfinished = [n for n in started if n not in finished]
    return text, unfinished, sticky


def main(argv):
    if len(argv) in (2, 3) and argv[0] in ("summary", "counts"):
        text, unfinished, sticky = summary(*argv[1:])
        if argv[0] == "summary" and unfinished:
            text += f"; never finished: {', '.join(unfinished)}"
        if argv[0] == "summary" and sticky:
            text += f"; sticky CUDA error in {', '.join(sticky)}"
        print(text)
    elif len(argv) == 3 and argv[0] == "state":
        _, unfinished, sticky = summary(*argv[1:])
        print(len(unfinished), len(sticky), unfinished[-1] if unfinished else "-", sticky[-1] if sticky else "-")
    else:
        return "usage: gpu_check_plugin.py summary|counts RESULTS.jsonl [GROUP] | state RESULTS.jsonl GROUP"
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
