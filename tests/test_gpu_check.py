"""What scripts/gpu_check.sh relies on, checked without a GPU: the suite collects without
pycocotools (the GPU machine has none), ``-m cuda`` selects every case that uses CUDA and no
CPU-only one, the sanitizer cases dry-run on the CPU kernels, the benchmark table is made from
whatever steps finished, and the script refuses steps that cannot fit one call.
(`make gpu-env-check` repeats the whole machine: its torch, a CUDA build, every collection.)"""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter where every pycocotools import fails, as where it is not installed.
_WITHOUT_PYCOCOTOOLS = """
import sys
for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco", "pycocotools.cocoeval", "pycocotools._mask"):
    sys.modules[name] = None
"""

_IMPORTS = _WITHOUT_PYCOCOTOOLS + """
import maskrcnn_fast, maskrcnn_fast.ops, maskrcnn_fast.models, maskrcnn_fast.data, maskrcnn_fast.cli
import maskrcnn_fast.engine, maskrcnn_fast.inference, maskrcnn_fast.inference.visualize, maskrcnn_fast.weights
from maskrcnn_fast.data import CocoDetection, SyntheticShapes
from maskrcnn_fast.data.coco import decode_segmentation
SyntheticShapes(1, 32)[0]
for call in (lambda: CocoDetection("images", "instances.json"), lambda: decode_segmentation([], 2, 2),
             lambda: __import__("maskrcnn_fast.evaluation")):
    try:
        call()
    except ImportError as e:
        msg = str(e)
        assert "pycocotools" in msg and "pip install pycocotools" in msg and "\\n" not in msg, msg
    else:
        raise AssertionError("ran without pycocotools")
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"]))
"""


def _run(code, *args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_without_pycocotools_the_package_imports_and_tests_collect_and_cuda_is_selected_by_marker():
    p = _run(_IMPORTS)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ids = [line for line in p.stdout.splitlines() if "::" in line]
    # cases that use CUDA by a parameter, by a skip without CUDA, or by their own mark
    for want in ("tests/test_nms.py::test_opcheck[cuda]",
                 "tests/test_roi_align.py::test_invalid_batch_index[cuda-2.0]",
                 "tests/test_box_iou.py::test_device_mismatch",
                 "tests/test_match_boxes.py::test_device_mismatch",
                 "tests/test_nms.py::test_device_mismatch",
                 "tests/test_model.py::test_eval_matches_torchvision_cuda[1]",
                 "tests/test_compile.py::test_cuda_graph_replay_equals_eager",
                 "tests/fuzz/test_fuzz_nms.py::test_fuzz_nms[native]",
                 "tests/fuzz/test_fuzz_mask_targets.py::test_fuzz_mask_targets_errors[native]"):
        assert want in ids, want
    assert any(i.startswith("tests/test_cuda_matches_cpu.py::") for i in ids)
    # and nothing that runs only on the CPU
    for i in ids:
        assert not re.search(r"[\[-]cpu[\]-]", i), i
        assert not re.search(r"[\[-]emu[\]-]", i), i
    for not_cuda in ("tests/test_nms.py::test_opcheck[cpu]", "tests/fuzz/test_fuzz_nms.py::test_fuzz_nms_errors[native]",
                     "tests/test_model.py::test_bad_ops_name", "tests/test_cli.py::test_bad_arguments"):
        assert not_cuda not in ids, not_cuda


def test_coco_tests_skip_with_a_reason_without_pycocotools():
    p = _run(_WITHOUT_PYCOCOTOOLS + "import pytest; sys.exit(pytest.main(sys.argv[1:]))",
             "-q", "-rs", "-p", "no:cacheprovider", "tests/test_evaluation.py", "tests/test_data.py",
             "-m", "coco")
    out = p.stdout
    assert p.returncode == 0, out[-3000:] + p.stderr[-3000:]
    assert re.search(r"\d+ skipped", out) and "passed" not in out and "failed" not in out, out[-2000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("pycocotools is not installed" in line for line in skips), skips


def test_sanitize_cases_dry_run_on_the_cpu():
    env = dict(os.environ, MF_SANITIZE_DEVICE="cpu")
    p = subprocess.run([sys.executable, "scripts/sanitize_cases.py"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[-1].endswith(" passed, 0 failed"), lines[-1]
    names = {line.split()[1] for line in lines if line.startswith("ok")}
    # what the script promises to reach
    assert {"case_nms_one_category_over_4096", "case_roi_align_bad_batch_index", "case_paste_masks_bad_image_index",
            "case_mask_targets_bad_indices", "case_match_boxes", "case_mask_targets"} <= names, names


def test_sanitize_guard_cases_reach_the_guards_of_the_emulated_cuda_kernels():
    # The CUDA kernels' answer to bad data (zeros, no error) shows without a GPU where the
    # emulated kernels are built; the sanitizer run checks their memory on the GPU.
    emulated = pytest.importorskip("maskrcnn_fast.emulated", reason="no emulated CUDA kernels in this tree")
    if not emulated.available():
        pytest.skip(f"no emulated CUDA kernels: {emulated.error()}")
    env = dict(os.environ, MF_SANITIZE_DEVICE="emu", MF_SANITIZE_ONLY="bad")
    p = subprocess.run([sys.executable, "scripts/sanitize_cases.py"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.splitlines()[-1] == "6 passed, 0 failed", p.stdout


def test_report_merges_the_steps_that_wrote_results(tmp_path):
    def record(group, impl, median):
        return json.dumps({"group": group, "name": f"bench[{impl}]", "extra_info": {"impl": impl, "device": "cuda"},
                           "stats": {"median": median}})

    (tmp_path / "bench_ops.jsonl").write_text(record("nms[4k]", "fused", 0.001) + "\n"
                                              + record("nms[4k]", "torch", 0.004) + "\n")
    # bench_model.jsonl was never written: its step timed out before the first benchmark ended
    p = subprocess.run([sys.executable, "benchmarks/report.py", str(tmp_path / "bench_ops.jsonl"),
                        str(tmp_path / "bench_model.jsonl"), "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "bench_model.jsonl: not written" in p.stdout
    md = (tmp_path / "results.md").read_text()
    assert "nms[4k]" in md and "4.00x" in md
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_gpu_check_refuses_steps_over_one_call(tmp_path):
    def gpu_check(*args):
        # PYTHON=false: a call the budget admits stops at the machine step, before any build
        return subprocess.run(["bash", "scripts/gpu_check.sh", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, OUT=str(tmp_path), PYTHON="false"))

    p = gpu_check("--wheel")  # build, tests, benchmarks and wheel: 660 s
    assert p.returncode == 2 and "split them over two calls" in p.stdout, p.stdout + p.stderr
    for args in ([], ["--sanitize"], ["--wheel", "--no-bench"], ["--wheel", "--sanitize"]):
        p = gpu_check(*args)
        assert p.returncode == 1 and "STEP machine: no torch" in p.stdout, (args, p.stdout + p.stderr)
    p = gpu_check("--frobnicate")
    assert p.returncode == 2 and "unknown option" in p.stdout


def test_overlay_venv_sees_this_torch(tmp_path):
    # From inside a virtual environment (make test's .venv, the GPU machine's Python),
    # venv --system-site-packages alone would not see this torch.
    p = subprocess.run([sys.executable, "scripts/overlay_venv.py", str(tmp_path / "v")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    py = p.stdout.strip()
    assert py == str(tmp_path / "v" / "bin" / "python")
    code = "import sys, torch, pip; print(sys.prefix); print(torch.__file__)"
    q = subprocess.run([py, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert q.returncode == 0, q.stderr
    prefix, torch_file = q.stdout.split()
    assert prefix == str(tmp_path / "v")
    import torch

    assert torch_file == torch.__file__


def _rehearse(tmp_path, *args, **env):
    # One case per file: the plumbing (groups, processes, results, budgets) is what is tested.
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, MF_REHEARSE_PER_FILE="1", **env)
    p = subprocess.run(["bash", "scripts/gpu_check.sh", "--rehearse", "--no-bench", "--no-user-paths", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=env)
    results = [json.loads(line) for line in (tmp_path / "tests.jsonl").read_text().splitlines()]
    groups = {line.split(":")[0].split()[1]: line for line in p.stdout.splitlines() if line.startswith("  group ")}
    step = [line for line in p.stdout.splitlines() if line.startswith("STEP tests:")]
    assert len(step) == 1, p.stdout + p.stderr
    return p, results, groups, step[0]


def _outcomes(results, group):
    return [r["outcome"] for r in results if r["group"] == group and "outcome" in r]


def test_rehearsal_selects_the_twins_of_the_cuda_cases_on_the_emulated_kernels_or_the_cpu():
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "scripts"), MF_REHEARSE_PER_FILE="2")
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                        "-p", "gpu_check_plugin", "tests/test_cuda_matches_cpu.py", "tests/test_nms.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ids = [line for line in p.stdout.splitlines() if "::" in line]
    parity = [i for i in ids if i.startswith("tests/test_cuda_matches_cpu.py::")]
    nms = [i for i in ids if i.startswith("tests/test_nms.py::")]
    assert len(parity) == 2 and all("[emu-" in i for i in parity), ids  # the CUDA kernels' code, emulated
    assert len(nms) == 2 and all("cuda" not in i for i in nms), ids


def test_a_planted_crash_or_sticky_error_fails_its_group_alone(tmp_path):
    # ops-box's process aborts at its first test, model's first test raises CUDA's sticky
    # illegal-address error: both groups fail and are named with that test, a fresh process
    # takes up the rest of each, and the other groups run.
    p, results, groups, step = _rehearse(tmp_path, "--groups=parity,ops-box,model,graphs-train",
                                         MF_PLANT_FAULT="ops-box,sticky:model")
    assert p.returncode == 1, p.stdout + p.stderr
    assert list(groups) == ["parity", "ops-box", "model", "graphs-train"], p.stdout
    crash = groups["ops-box"]
    started = [r["nodeid"] for r in results if r["group"] == "ops-box" and r.get("event") == "start"]
    assert started[0].startswith("tests/test_nms.py::") and f"crashed in {started[0]}" in crash, crash
    assert "taken up again 1 time" in crash and "(rc 1," in crash, crash
    after = _outcomes(results, "ops-box")
    assert len(after) == len(started) - 1 >= 1 and set(after) == {"passed"}, results  # the rest of the group
    # the group's log keeps the crash's traceback (pytest's faulthandler)
    assert "Fatal Python error: Aborted" in (tmp_path / "tests_ops-box.log").read_text()
    assert "sticky CUDA error in tests/test_" in groups["model"], groups["model"]
    assert _outcomes(results, "model").count("failed") == 1  # stopped there, not one failure per later test
    for ok in ("parity", "graphs-train"):
        assert "(rc 0," in groups[ok] and " 0 failed, 0 error" in groups[ok], groups[ok]
        assert _outcomes(results, ok), ok
    assert _outcomes(results, "parity") == ["passed"]
    assert f"ops-box crashed in {started[0]}" in step and "model hit a sticky CUDA error in tests/test_" in step, step


def test_a_planted_timeout_keeps_what_the_step_finished(tmp_path):
    # A test that never returns in ops-roi's second file: the step's budget cuts that group,
    # the next is not started, and everything finished before the cut stays on file.
    p, results, groups, step = _rehearse(tmp_path, "--groups=parity,ops-roi,model",
                                         MF_PLANT_FAULT="hang:tests/test_multilevel_roi_align.py",
                                         GPU_CHECK_TESTS_TIMEOUT="60")
    assert p.returncode == 1, p.stdout + p.stderr
    assert step.startswith("STEP tests: TIMED OUT"), step
    assert "TIMED OUT" in groups["ops-roi"] and "cut in tests/test_multilevel_roi_align.py::" in groups["ops-roi"]
    assert "not run" in groups["model"], groups["model"]
    assert _outcomes(results, "parity") == ["passed"]
    finished = [r["nodeid"] for r in results if r["group"] == "ops-roi" and "outcome" in r]
    assert len(finished) == 1 and finished[0].startswith("tests/test_roi_align.py::"), results
    assert "ops-roi timed out in tests/test_multilevel_roi_align.py::" in step and "model not run" in step, step


def test_gpu_check_refuses_a_rehearsal_or_budgets_over_one_call(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON="false")
    for args, extra in ((["--rehearse", "--wheel"], {}), (["--rehearse"], {"GPU_CHECK_TESTS_TIMEOUT": "400"})):
        p = subprocess.run(["bash", "scripts/gpu_check.sh", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, env=dict(env, **extra))
        assert p.returncode == 2 and "split them over two calls" in p.stdout, (args, p.stdout + p.stderr)
    p = subprocess.run(["bash", "scripts/gpu_check.sh", "--groups=parity,nonesuch"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=env)
    assert p.returncode == 2 and "no test group nonesuch" in p.stdout, p.stdout


def test_rehearsal_runs_the_user_paths_step_and_a_sticky_error_fails_it(tmp_path):
    # The user-paths step alone: its own process, results in user_paths.jsonl, one STEP line; a
    # sticky CUDA error planted in its first case stops it there.
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, MF_PLANT_FAULT="sticky:user-paths")
    p = subprocess.run(["bash", "scripts/gpu_check.sh", "--rehearse", "--no-tests", "--no-bench"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 1, p.stdout + p.stderr
    step = [line for line in p.stdout.splitlines() if line.startswith("STEP user-paths:")]
    assert len(step) == 1 and "0 passed, 1 failed" in step[0], p.stdout
    assert "sticky CUDA error in tests/test_gpu_user_paths.py::test_train[emu-fp32]" in step[0], step
    results = [json.loads(line) for line in (tmp_path / "user_paths.jsonl").read_text().splitlines()]
    assert {r["group"] for r in results} == {"user-paths"}
    assert _outcomes(results, "user-paths") == ["failed"]
