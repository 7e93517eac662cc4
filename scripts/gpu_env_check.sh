#!/usr/bin/env bash
# A dry run of scripts/gpu_check.sh in the GPU machine's environment, on a machine without a
# GPU, so that a lent GPU machine's few minutes are not lost to a build or collection error.
#
#   bash scripts/gpu_env_check.sh [--run-tests]        # make gpu-env-check [GPU_ENV_ARGS=...]
#   bash scripts/gpu_env_check.sh --rehearse [ARGS]    # make gpu-env-rehearsal [GPU_REHEARSAL_ARGS=...]
#
# 1. A scratch venv, build/gpu-env/venv: Python 3.12 when there is one (GPU_ENV_PYTHON picks
#    another), scripts/gpu_env_requirements.txt (torch 2.11.0 for CUDA 13.0, torchvision
#    0.26.0, the test tools), and no pycocotools. Reused while those stay the same.
# 2. A copy of the work tree as the GPU machine gets it (tracked files and untracked ones git
#    does not ignore) in build/gpu-env/tree, so the main build is untouched; the copy's build/
#    is kept, so a later run recompiles only what changed.
# 3. There, `scripts/gpu_check.sh --collect-only --wheel`: the CUDA build as on the GPU machine
#    (MASKRCNN_FAST_CUDA=1, TORCH_CUDA_ARCH_LIST=9.0, MASKRCNN_FAST_EMU=0), the tests and
#    benchmarks each step would run (collected, not run), the wheel linked, installed into a venv
#    made from this venv and run on the CPU; then scripts/sanitize_cases.py on the CPU kernels.
# 4. Every test and every benchmark collected: any collection error fails the run.
# --run-tests: then the whole CPU test suite in that venv (long on 2 cores).
# --rehearse: instead of 3 and 4, scripts/gpu_check.sh --rehearse (options after --rehearse are
#    passed on) in that venv, in its own copy of the tree, build/gpu-env/rehearse-tree: the GPU
#    tree's build has no emulated CUDA kernels (MASKRCNN_FAST_EMU=0, as on the GPU machine), so
#    this copy is built with the CPU and the emulated kernels (MASKRCNN_FAST_CUDA=0
#    MASKRCNN_FAST_EMU=1, no nvcc) against the venv's torch; its build/ is kept, so a later run
#    relinks only. Output in build/gpu-env/out/rehearse (the rehearsal's $OUT) and rehearse.log.
#
# The first CUDA build takes 15-30 minutes on a busy 2-core machine (MAX_JOBS=1, nice 19).
# Exit status 0 when everything passed; the last lines say what ran.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${GPU_ENV_DIR:-build/gpu-env}
VENV=$ROOT/$BASE/venv TREE=$ROOT/$BASE/tree OUT=$ROOT/$BASE/out
RUN_TESTS=0 REHEARSE=0 REHEARSE_ARGS=()
for arg in "$@"; do
  if [ "$REHEARSE" = 1 ]; then REHEARSE_ARGS+=("$arg"); continue; fi
  case "$arg" in
    --run-tests) RUN_TESTS=1 ;;
    --rehearse) REHEARSE=1 TREE=$ROOT/$BASE/rehearse-tree ;;
    *) echo "unknown option $arg (--run-tests, --rehearse [gpu_check.sh's options])"; exit 2 ;;
  esac
done
mkdir -p "$BASE" "$OUT"
fail() { echo "GPU ENV CHECK FAILED: $*"; exit 1; }

# ---- 1. the venv
pick_python() {
  local c
  for c in "${GPU_ENV_PYTHON:-}" python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 python3; do
    [ -n "$c" ] && "$c" -c "import sys; assert sys.version_info >= (3, 10)" 2>/dev/null && { echo "$c"; return; }
  done
}
BASE_PY=$(pick_python)
[ -n "$BASE_PY" ] || fail "no Python >= 3.10 (set GPU_ENV_PYTHON)"
want="$("$BASE_PY" -c 'import sys; print(sys.version)') $(sha256sum scripts/gpu_env_requirements.txt)"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
  echo "=== venv $VENV from $BASE_PY"
  rm -rf "$VENV"
  "$BASE_PY" -m venv "$VENV" || fail "venv"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r scripts/gpu_env_requirements.txt \
    || fail "pip install -r scripts/gpu_env_requirements.txt"
  echo "$want" > "$VENV/.installed"
fi
PY=$VENV/bin/python
"$PY" -c "import pycocotools" 2>/dev/null && fail "pycocotools is installed in $VENV; the GPU machine has none"
"$PY" -c "import sys, torch, torchvision; print('venv: python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__)"

# ---- 2. the tree
echo "=== tree copy $TREE"
mkdir -p "$TREE"
find "$TREE" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
git ls-files -z -co --exclude-standard | grep -zv '^\.venv$' | tar --null -T - -cf - | tar -xf - -C "$TREE" \
  || fail "copying the tree"

cd "$TREE"
if [ "$REHEARSE" = 1 ]; then
  # ---- 3'. the rehearsal: the CPU and emulated kernels built here, then every step run
  echo "=== build: CPU and emulated CUDA kernels against $("$PY" -c 'import torch; print("torch", torch.__version__)')"
  t0=$SECONDS
  MASKRCNN_FAST_CUDA=0 MASKRCNN_FAST_EMU=1 MAX_JOBS=${MAX_JOBS:-1} nice -n 19 "$PY" setup.py build_ext --inplace \
    > "$OUT/rehearse_build.log" 2>&1 || { tail -30 "$OUT/rehearse_build.log"; fail "the rehearsal's build"; }
  echo "built in $((SECONDS - t0)) s ($(grep -cE '^\[[0-9]+/[0-9]+\]' "$OUT/rehearse_build.log") compile steps)"
  t0=$SECONDS
  PYTHON=$PY OUT=$OUT/rehearse nice -n 19 bash scripts/gpu_check.sh --rehearse "${REHEARSE_ARGS[@]}" 2>&1 \
    | tee "$OUT/rehearse.log"
  rc=${PIPESTATUS[0]}
  echo
  echo "=== GPU environment rehearsal ($("$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)'), no pycocotools)"
  echo "  gpu_check.sh --rehearse ${REHEARSE_ARGS[*]}: rc $rc, $((SECONDS - t0)) s; logs in $OUT/rehearse"
  exit $rc
fi

# ---- 3. the GPU check's steps, collect-only
export MAX_JOBS=${MAX_JOBS:-1} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
results=()
PYTHON=$PY OUT=$OUT GPU_CHECK_BUILD_TIMEOUT=${GPU_CHECK_BUILD_TIMEOUT:-3600} \
  nice -n 19 bash scripts/gpu_check.sh --collect-only --wheel 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
results+=("gpu_check.sh --collect-only --wheel: rc $rc")
status=$rc
MF_SANITIZE_DEVICE=cpu nice -n 19 "$PY" scripts/sanitize_cases.py > "$OUT/sanitize_cpu.log" 2>&1
rc=$?
results+=("sanitize_cases.py on the CPU: $(tail -1 "$OUT/sanitize_cpu.log") (rc $rc)")
[ "$rc" = 0 ] || { cat "$OUT/sanitize_cpu.log"; status=1; }

# ---- 4. everything collected
collect() {  # name log pytest-args...
  local name=$1 log=$2; shift 2
  nice -n 19 "$PY" -m pytest --collect-only -q -p no:cacheprovider "$@" > "$log" 2>&1
  local rc=$?
  grep -E "^ERROR |errors? during collection" "$log" | head -20
  results+=("$name: $(grep -E 'collected|error' "$log" | tail -1) (rc $rc)")
  [ "$rc" = 0 ] || status=1
}
collect "all tests" "$OUT/collect_tests.log" tests
collect "all benchmarks" "$OUT/collect_bench.log" benchmarks -o "python_files=bench_*.py" -o "python_functions=bench_*"

if [ "$RUN_TESTS" = 1 ]; then
  nice -n 19 "$PY" -m pytest tests -q -p no:cacheprovider -m "not wheel" > "$OUT/tests_cpu.log" 2>&1
  rc=$?
  results+=("CPU tests: $(tail -1 "$OUT/tests_cpu.log") (rc $rc)")
  [ "$rc" = 0 ] || { grep -E "^(FAILED|ERROR)" "$OUT/tests_cpu.log" | head -30; status=1; }
fi

echo
echo "=== GPU environment dry run ($("$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)'), no pycocotools)"
printf '  %s\n' "${results[@]}"
echo "logs in $OUT; status $status"
exit $status
