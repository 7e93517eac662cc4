"""The emulated-CUDA harness can fail: each class of defect, planted in a tiny kernel
(csrc/emu/selftest_kernels.cu), is reported by the emulation or by its sanitizer build, and
the correct twin of each kernel runs.

The sanitizer cases run in a subprocess with the instrumented _C_emu that ``make sanitize``
(AddressSanitizer + UBSan, ThreadSanitizer) builds under build/sanitize/; they skip when it has
not been built.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from maskrcnn_fast import emulated

pytestmark = pytest.mark.skipif(not emulated.available(),
                                reason=f"no emulated CUDA kernels: {emulated.error()}")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def selftest(defect):
    return torch.ops.maskrcnn_fast_emu._emu_selftest(defect)


@pytest.mark.parametrize("defect,message", [
    ("divergent_barrier", r"kernel branch_barrier_kernel: __syncthreads\(\) at .*selftest_kernels.cu:\d+ "
                          r"is not reached by 64 of 128 threads"),
    ("over_launch_bounds", r"kernel bounded_kernel: block \(128, 1, 1\) has 128 threads, over the "
                           r"kernel's __launch_bounds__\(64\)"),
    ("partial_ballot", r"kernel ballot_kernel: lanes 16-31 of warp 0 exited while lanes of "
                       r"__ballot_sync\(mask 0xffffffff\) wait"),
    ("lane_outside_mask", r"kernel outside_mask_kernel: __ballot_sync\(mask 0xfffffffe\) in warp 0: "
                          r"called by lane 0, outside its mask"),
    ("empty_grid", r"kernel write_kernel: grid \(0, 1, 1\) has no blocks"),
    ("grid_too_large", r"kernel write_kernel: grid \(1, 65536, 1\) exceeds the limits"),
    ("block_too_large", r"kernel write_kernel: block \(2048, 1, 1\) exceeds the limits"),
])
def test_planted_defect_is_reported(defect, message):
    with pytest.raises(RuntimeError, match=message):
        selftest(defect)


@pytest.mark.parametrize("correct", ["none", "shared_synced", "uniform_barrier", "within_launch_bounds",
                                     "full_ballot", "empty_grid_through_launch"])
def test_correct_twin_runs(correct):
    out = selftest(correct)
    if correct == "none":
        assert torch.equal(out[:96], torch.arange(96, dtype=torch.float32))
    if correct == "shared_synced":  # thread t read thread t + 1's value, in every block
        assert torch.equal(out[:256], (torch.arange(256) + 1).remainder(256).float())
    if correct == "full_ballot":
        assert torch.all(out[:64] == 1)
    if correct == "empty_grid_through_launch":  # the launch layer launches nothing
        assert torch.all(out == 0)


def test_hang_becomes_an_error(monkeypatch):
    """A barrier some threads never reach is an error after MF_EMU_TIMEOUT_S, never a hang: here
    the first half of a block waits at a barrier while the second half waits at another."""
    monkeypatch.setenv("MF_EMU_TIMEOUT_S", "1")
    with pytest.raises(RuntimeError, match="barrier in divergent code|not every thread arrived"):
        selftest("divergent_barrier")


def test_concurrent_blocks_give_the_same_results(monkeypatch, seed):
    """MF_EMU_BLOCKS runs several blocks at once (their __shared__ storage is handed from block
    to block); the results do not change."""
    from maskrcnn_fast import ops

    x = torch.randn(2, 16, 20, 24)
    rois = torch.cat([torch.randint(0, 2, (20, 1)).float(), torch.rand(20, 4) * 40], 1)
    rois[:, 3:] += rois[:, 1:3]
    b = torch.rand(500, 4) * 100
    b[:, 2:] += b[:, :2]
    s = torch.rand(500)
    idxs = torch.randint(0, 4, (500,))
    with emulated.cuda():
        one = (ops.roi_align(x, rois, 5, 0.5, 2, True), ops.batched_nms(b, s, idxs, 0.5))
    monkeypatch.setenv("MF_EMU_BLOCKS", "4")
    with emulated.cuda():
        four = (ops.roi_align(x, rois, 5, 0.5, 2, True), ops.batched_nms(b, s, idxs, 0.5))
    assert torch.equal(one[0], four[0]) and torch.equal(one[1], four[1])
    assert torch.equal(selftest("shared_synced")[:256], (torch.arange(256) + 1).remainder(256).float())


def test_emulated_mode_runs_autograd(seed):
    """emulated.cuda() redirects below autograd: the registered backward runs the emulated
    backward kernel."""
    from maskrcnn_fast import ops

    x = torch.randn(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.0, 1, 1, 9, 10], [0, 3, 2, 7, 11]], dtype=torch.float64)
    ops.roi_align(x, rois, 3, 1.0, 2, False).sum().backward()
    want = x.grad.clone()
    x.grad = None
    with emulated.cuda():
        ops.roi_align(x, rois, 3, 1.0, 2, False).sum().backward()
    torch.testing.assert_close(x.grad, want, rtol=1e-12, atol=1e-12)


# ---- the sanitizer builds -----------------------------------------------------------------

def _sanitized(variant):
    folder = os.path.join(ROOT, "build", "sanitize", variant, "maskrcnn_fast")
    libs = [f for f in os.listdir(folder) if f.startswith("_C_emu")] if os.path.isdir(folder) else []
    return os.path.join(folder, libs[0]) if libs else None


def sanitizer_preload(variant):
    """The sanitizer runtime first, then libstdc++ (Python does not link it: without it loaded
    at start the runtime cannot intercept __cxa_throw)."""
    def lib(name):
        return subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                              text=True).stdout.strip()
    return f"{lib(f'lib{variant}.so')} {lib('libstdc++.so.6')}"


def run_sanitized(variant, code, extra_env=None):
    """Runs `code` in a fresh interpreter with the `variant` build of _C_emu and its runtime
    preloaded (as `make sanitize` does). Returns (returncode, stderr)."""
    lib = _sanitized(variant)
    if lib is None:
        pytest.skip(f"no {variant} build of _C_emu (make sanitize builds it)")
    env = dict(os.environ, LD_PRELOAD=sanitizer_preload(variant), MASKRCNN_FAST_EMU_LIB=lib, PYTHONPATH=ROOT,
               ASAN_OPTIONS="detect_leaks=0:alloc_dealloc_mismatch=0",
               TSAN_OPTIONS="report_signal_unsafe=0:halt_on_error=1", MF_EMU_THREADS="all",
               **(extra_env or {}))
    prog = "import torch, maskrcnn_fast\nassert maskrcnn_fast.emulated.available(), maskrcnn_fast.emulated.error()\n"
    proc = subprocess.run([sys.executable, "-c", prog + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr


@pytest.mark.asan
def test_asan_reports_out_of_bounds_write():
    rc, err = run_sanitized("asan", "torch.ops.maskrcnn_fast_emu._emu_selftest('out_of_bounds')")
    assert rc != 0 and "heap-buffer-overflow" in err and "write_kernel" in err, err[-3000:]
    rc, err = run_sanitized("asan", "torch.ops.maskrcnn_fast_emu._emu_selftest('none')")
    assert rc == 0, err[-3000:]


@pytest.mark.tsan
def test_tsan_reports_missing_syncthreads():
    rc, err = run_sanitized("tsan", "torch.ops.maskrcnn_fast_emu._emu_selftest('shared_race')")
    assert rc != 0 and "data race" in err and "shared_kernel" in err, err[-3000:]
    rc, err = run_sanitized("tsan", "torch.ops.maskrcnn_fast_emu._emu_selftest('shared_synced')")
    assert rc == 0, err[-3000:]
