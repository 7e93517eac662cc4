#!/usr/bin/env bash
# The emulated CUDA kernels under a sanitizer: builds maskrcnn_fast._C_emu instrumented into
# build/sanitize/<variant>/ and runs the emulated-kernel tests against it, the sanitizer runtime
# preloaded (Python is not instrumented; only our kernels and the emulation are).
#
#   bash scripts/sanitize_emu.sh asan [pytest args]  # AddressSanitizer + UndefinedBehaviorSanitizer
#   bash scripts/sanitize_emu.sh tsan [pytest args]  # ThreadSanitizer: races between a block's threads
#
# Default case set: tests/test_emulation.py (the planted defects) and every emulated case of
# tests/test_cuda_matches_cpu.py except the largest (grid-stride tails, 140k-box NMS).
# SANITIZE_CASES="-k ..." narrows it (CI runs a small set). Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:?usage: sanitize_emu.sh asan|tsan [pytest args]}
shift
case "$variant" in asan|tsan) ;; *) echo "variant must be asan or tsan, got $variant"; exit 2 ;; esac
PY=${PY:-.venv/bin/python}
out="build/sanitize/$variant"
MASKRCNN_FAST_EMU_SANITIZE=$variant $PY setup.py build_ext --build-lib "$out" \
  --build-temp "$out/tmp" > "$out.log" 2>&1 || { tail -30 "$out.log"; exit 1; }
lib=$(ls "$out"/maskrcnn_fast/_C_emu*.so)
preload="$(gcc -print-file-name=lib$variant.so) $(gcc -print-file-name=libstdc++.so.6)"
cases=${SANITIZE_CASES:--k "emu and not tail and not global_memory and not many_gt"}
echo "sanitize $variant: $lib"
# halt_on_error: the first report fails the test that caused it. MF_EMU_THREADS=all: every
# emulated thread on its own OS thread, so ThreadSanitizer sees every pair of them.
eval "env LD_PRELOAD=\"$preload\" MASKRCNN_FAST_EMU_LIB=$lib MF_EMU_THREADS=all \
  ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:halt_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  TSAN_OPTIONS=halt_on_error=1:report_signal_unsafe=0 \
  $PY -m pytest tests/test_cuda_matches_cpu.py -q -p no:cacheprovider $cases $*"
