"""The dense benchmark's child-process harness (benchmarks/bench_dense.py ``run_capped``) and
its table (benchmarks/report.py ``dense_table``): a child that grows past its resident-set cap
is killed and reported as out of memory, one that stays below it returns its measurements.
No timings are asserted; the children allocate a few hundred MB at most."""
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"mf_benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_dense = _load("bench_dense")
report = _load("report")

MB = 1 << 20

# grows by 8 MB every 10 ms up to 600 MB (never more, even if the harness did not kill it), then
# holds it: however late a loaded machine lets the harness look, the child is still there
GROW = """
import time
chunks = []
for _ in range(75):
    chunks.append(b"\\1" * (8 << 20))
    time.sleep(0.01)
time.sleep(100)
"""

# 40 MB, then its measurements in MF_DENSE_RESULT
SMALL = """
import json, os, time
t0 = time.perf_counter()
x = b"\\1" * (40 << 20)
hwm = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
with open(os.environ["MF_DENSE_RESULT"], "w") as f:
    json.dump({"time_s": time.perf_counter() - t0, "n": len(x), "vmhwm": hwm}, f)
"""


def test_child_past_the_cap_is_out_of_memory():
    out = bench_dense.run_capped([sys.executable, "-c", GROW], 120 * MB, min_available=0, timeout_s=120)
    assert out["status"] == "out of memory", out
    assert out["rss_at_kill"] > 120 * MB
    assert out["rss_at_kill"] < 700 * MB  # the child's 600 MB and the interpreter
    assert out["peak_rss"] >= out["rss_at_kill"]
    assert "cap" in out["reason"]
    assert out["result"] is None


def test_child_below_the_cap_reports_its_measurements():
    out = bench_dense.run_capped([sys.executable, "-c", SMALL], 1024 * MB, min_available=0, timeout_s=120)
    assert out["status"] == "ok", out
    assert out["returncode"] == 0 and out["rss_at_kill"] is None and out["reason"] is None
    assert out["result"]["n"] == 40 * MB and out["result"]["time_s"] >= 0
    assert 40 * MB < out["peak_rss"] < 1024 * MB


def test_a_large_parent_is_not_the_childs_peak():
    """wait4's ru_maxrss would give the child the parent's high-water mark (Linux carries it over
    the exec): a pytest process of a few GB made every child look that large."""
    ballast = bytearray(400 * MB)
    ballast[:: 4096] = b"\1" * len(ballast[:: 4096])  # touched: resident
    out = bench_dense.run_capped([sys.executable, "-c", SMALL], 1024 * MB, min_available=0, timeout_s=120)
    assert out["status"] == "ok", out
    assert 40 * MB < out["peak_rss"] < 300 * MB, out["peak_rss"]
    del ballast


def test_failing_child_is_failed_with_its_log():
    out = bench_dense.run_capped([sys.executable, "-c", "raise SystemExit('no data')"], 1024 * MB, min_available=0)
    assert out["status"] == "failed" and out["returncode"] == 1
    assert "no data" in out["log"]


def test_machine_floor_kills_too():
    # a floor above any machine's available memory: the child is stopped at once
    out = bench_dense.run_capped([sys.executable, "-c", GROW], 1 << 40, min_available=1 << 60, timeout_s=120)
    assert out["status"] == "out of memory"
    assert "available memory" in out["reason"]


def _case(impl, k, status="ok", peak=None, time_s=None, losses=None, mode="train"):
    c = {"status": status, "impl": impl, "k": k, "mode": mode, "cap": 16 << 30, "peak_rss": peak,
         "rss_at_kill": None, "reason": None, "returncode": 0, "result": None}
    if status == "ok":
        c["result"] = {"time_s": time_s, "vmhwm": peak, "losses": losses, "mask_format": "packed", "instances": k}
    else:
        c.update(rss_at_kill=17 << 30, reason="resident set passed the cap", returncode=-9)
    return c


def test_dense_table_computes_torchvision_where_it_ran_out_of_memory(tmp_path):
    losses = {"loss_mask": 1.0, "loss_classifier": 2.0}
    cases = [
        _case("fused", 10, peak=2_000_000_000, time_s=30.0, losses=losses),
        _case("torchvision", 10, peak=2_000_000_000, time_s=45.0, losses=dict(losses, loss_mask=1.0 + 1e-7)),
        _case("fused", 1000, peak=2_001_000_000, time_s=31.0, losses=losses),
        _case("torchvision", 1000, peak=7_000_000_000, time_s=60.0, losses=losses),
        _case("fused", 3000, peak=2_003_000_000, time_s=33.0, losses=losses),
        _case("torchvision", 3000, status="out of memory"),
    ]
    path = tmp_path / "dense.jsonl"
    path.write_text("".join(json.dumps({"group": f"dense_train[K={c['k']}]", "name": "x", "stats": {"median": 1.0},
                                        "extra_info": {"impl": c["impl"], "dense": c}}) + "\n" for c in cases))
    head, rows, notes = report.dense_table(report.load_dense(str(path)))
    row = {r[0]: dict(zip(head, r)) for r in rows}
    assert row["dense_train[K=10]"]["losses max rel diff"] == "1.0e-07 (loss_mask)"
    assert row["dense_train[K=1000]"]["tv/fused peak"] == "3.50x"
    assert row["dense_train[K=1000]"]["fused growth/inst"] == "1.01 kB"
    assert row["dense_train[K=1000]"]["tv growth/inst"] == "5.05 MB"
    k3 = row["dense_train[K=3000]"]
    assert k3["tv time"] == "out of memory" and "at kill" in k3["tv peak RSS"]
    # 2.0 GB + 5.05 MB x 2990
    assert k3["tv/fused peak"].endswith("(computed)") and "K=1000" in k3["notes"]
    assert float(k3["tv/fused peak"].split("x")[0]) == pytest.approx((2e9 + 5e9 / 990 * 2990) / 2.003e9, abs=0.01)
    assert notes and "16.0 GiB" in notes[0]
    # report.py's main prints it beside (not inside) the timed table
    out = tmp_path / "out"
    report.main([str(path), "--out", str(out)])
    assert "dense_train[K=3000]" in (out / "results.md").read_text()
    assert os.path.isfile(out / "results.md")
