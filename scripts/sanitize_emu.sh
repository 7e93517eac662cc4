#!/usr/bin/env bash
# The emulated CUDA kernels under a sanitizer: builds maskrcnn_fast._C_emu instrumented into
# build/sanitize/<variant>/, checks that the sanitizer reports its planted defect
# (tests/test_emulation.py), then runs the emulated-kernel tests against that build with the
# sanitizer runtime preloaded (Python is not instrumented; only our kernels and the emulation are).
#
#   bash scripts/sanitize_emu.sh asan [pytest args]  # AddressSanitizer + UndefinedBehaviorSanitizer
#   bash scripts/sanitize_emu.sh tsan [pytest args]  # ThreadSanitizer: races between a block's threads
#
# Cases, by pytest marker (pyproject.toml; tests/test_cuda_matches_cpu.py and
# tests/test_packed_mask_targets.py mark them), never by
# name: asan, -m "emu and not large": every emulated case but the largest (grid-stride tails,
# the 140k-box NMS: minutes each under a sanitizer), ~2.5 min. tsan hands each emulated thread
# to its own OS thread of the pool (a synchronised hand-off per thread and block, slow under
# TSan): -m "emu and small", one dtype per op, the guards and the small special cases (~13 min
# on 2 cores); the other dtypes run the same indexing, and the far-tile NMS and full-size
# paste_masks cases take tens of minutes each there.
# SANITIZE_M replaces the -m expression (CI runs -m "emu and sanitize_ci", see .ci/run); further
# pytest args (a -k to narrow by hand) go after the variant. Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SANITIZE_K:-}" ]; then
  echo "SANITIZE_K is gone: the cases are chosen by marker, SANITIZE_M (e.g. \"emu and small\")"; exit 2
fi
variant=${1:?usage: sanitize_emu.sh asan|tsan [pytest args]}
shift
case "$variant" in asan|tsan) ;; *) echo "variant must be asan or tsan, got $variant"; exit 2 ;; esac
PY=${PY:-.venv/bin/python}
out="build/sanitize/$variant"
mkdir -p "$out"
MASKRCNN_FAST_EMU_SANITIZE=$variant $PY setup.py build_ext --build-lib "$out" \
  --build-temp "$out/tmp" > "$out.log" 2>&1 || { tail -30 "$out.log"; exit 1; }
lib=$(ls "$out"/maskrcnn_fast/_C_emu*.so)
echo "sanitize $variant: $lib"
# The planted defect first: a sanitizer that reports nothing there proves nothing below.
$PY -m pytest tests/test_emulation.py -q -p no:cacheprovider -m "$variant"
preload="$(gcc -print-file-name=lib$variant.so) $(gcc -print-file-name=libstdc++.so.6)"
if [ "$variant" = tsan ]; then m_default="emu and small"; else m_default="emu and not large"; fi
m=${SANITIZE_M:-$m_default}
# halt_on_error: the first report ends the run (-v names the test it came from); the report
# goes to $out.report.<pid> (pytest would swallow it) and is printed here. ThreadSanitizer runs
# with MF_EMU_THREADS=all: every emulated thread on its own OS thread, started together, so it
# sees every pair of them.
# OMP_NUM_THREADS=1: libgomp's thread pool synchronises through futexes ThreadSanitizer cannot
# see, so the CPU kernels the emulated ones are compared with would report false races.
rm -f "$out".report.*
threads=""
[ "$variant" = tsan ] && threads=all
rc=0
env LD_PRELOAD="$preload" MASKRCNN_FAST_EMU_LIB="$lib" MF_EMU_THREADS="$threads" OMP_NUM_THREADS=1 \
  ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:halt_on_error=1:log_path=$out.report \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$out.report \
  TSAN_OPTIONS=halt_on_error=1:report_signal_unsafe=0:log_path=$out.report \
  $PY -m pytest tests/test_cuda_matches_cpu.py tests/test_packed_mask_targets.py -v -p no:cacheprovider -m "$m" "$@" || rc=$?
if ls "$out".report.* > /dev/null 2>&1; then
  cat "$out".report.*
  echo "sanitize $variant: the sanitizer reported (above); exit status $rc"
  exit $(( rc == 0 ? 1 : rc ))
fi
exit $rc
