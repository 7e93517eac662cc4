#!/usr/bin/env bash
# On a machine with a GPU and its own torch (no network, nothing installed from registries):
# build the extension for this GPU, run every test that uses CUDA, time the CUDA benchmarks and
# print their table.
#
# It needs what the lent GPU machine has: a Python (a venv there) with a CUDA torch and its
# torchvision, nvcc, pytest, pytest-benchmark, hypothesis, numpy, matplotlib; no pycocotools
# (the COCO tests are not CUDA tests). `make gpu-env-check` repeats its build and collection
# here, against that machine's torch, without a GPU.
#
# Budget. A command there runs at most 10 minutes, so the timeouts of the steps one call runs
# must add up to at most 540 s: the script refuses a combination that does not, before it
# builds. The budgets come from the rehearsal's times here (docs/testing.md, "Budgets"): the
# CPU-bound seconds scaled by 0.5 (a free core there against a shared one here), plus a CUDA
# context per process, with what margin 540 s leaves; a step cut by its budget keeps what it
# finished (the build alone ends the call: it has the widest margin).
#
#   step                 timeout  what
#   build                  120 s  nvcc for this GPU's architecture only, MAX_JOBS=nproc (12 .cu
#                                 files, compiled in parallel); skipped when the sources, torch
#                                 and architecture are those of the last build here (a second
#                                 call on a warm machine, or after --collect-only)
#   tests                  140 s  pytest -m cuda: every case that uses CUDA (863 with the fuzz
#                                 suite's; tests/conftest.py marks them), in groups (below)
#   user-paths             110 s  tests/test_gpu_user_paths.py: train (with and without --amp),
#                                 eval, predict, export pt2 and its package, CUDA-graph capture
#                                 of optimize_for_inference's model, the NCCL set-up; each
#                                 against the CPU, in one process
#   bench-ops               90 s  the op benchmarks (81), MF_BENCH_BUDGET=0.2 s each
#   bench-model             80 s  the model and training-iteration benchmarks (42), then torchvision's
#                                 models with accelerate_torchvision on/off (4 of them, MF_BENCH_MODELS)
#                          -----
#   default                540 s
#
#   --sanitize: the build, then compute-sanitizer on scripts/sanitize_cases.py, nothing else
#   sanitize-memcheck      110 s  (the tests and benchmarks are the default call's; 360 s)
#   sanitize-racecheck     130 s
#   --wheel, with --no-bench or --no-tests:
#   wheel                  120 s  link a wheel from the build's objects, install it into a fresh
#                                 venv that sees this torch, run an op on the GPU
#
# A GPU session (15 minutes of machine time) is two calls on the same warm machine, each ending
# with its $OUT in one archive (8 files at most come back from a call):
#   OUT=/tmp/gc bash scripts/gpu_check.sh; tar -czf "$OUT/gpu_check.tgz" -C /tmp/gc .
#   OUT=/tmp/gs bash scripts/gpu_check.sh --sanitize; tar -czf "$OUT/sanitize.tgz" -C /tmp/gs .
# (the second $OUT on each line is the device tool's; the build is skipped in the second call)
# (docs/testing.md, "One GPU session", has the exact commands.)
# Other uses:
#   bash scripts/gpu_check.sh --wheel --no-bench
#   bash scripts/gpu_check.sh --no-tests         # benchmarks only
#   bash scripts/gpu_check.sh --collect-only     # no GPU needed: build, then only collect what
#                                                # each step would run (the dry run's mode)
#   bash scripts/gpu_check.sh --groups=ops-roi,model --no-bench   # only these test groups
#   bash scripts/gpu_check.sh --rehearse         # no GPU needed: every step run, on the CPU
#   PYTHON=python3.12 OUT=/tmp/out bash scripts/gpu_check.sh
#
# Groups. The CUDA tests run as groups of test files, each in its own pytest process, in order
# of value: parity (each kernel against the CPU), ops-roi and ops-box (the op tests), model
# (against torchvision), graphs-train (CUDA graphs, compile, training), fuzz, rest (any other
# file, so no CUDA case is left out). A CUDA fault that poisons the context (illegal address,
# device-side assert) thus ends one group: scripts/gpu_check_plugin.py stops a group at its first
# sticky error, a group that crashes is reported with the test it was running, and a fresh
# process takes up the rest of that group after that test (twice at most). Each group
# gets what is left of the step's budget; one cut by it is reported TIMED OUT, those after it
# "not run". Each process costs a few seconds (torch's import, the CUDA context).
#
# --rehearse proves the plumbing here, without a GPU: every step of the default call (or of the
# options given) in its order, with its budgets, STEP lines and files, on the CPU. The build is
# the existing one, never rebuilt. Each CUDA case is replaced by its twin on the emulated CUDA
# kernels or the CPU (MF_REHEARSE_PER_FILE of them per file, default 3; a case without one runs
# as it is: it skips, or draws the CPU as the fuzz cases do); the sanitizer cases run on the
# emulated kernels without compute-sanitizer; the benchmarks on the CPU (MF_BENCH_BUDGET 0.02 s,
# the first of each file, not the deploy one, which skips on CUDA). It does not prove that a
# CUDA kernel runs, that the budgets fit a GPU's times, or the build on that machine.
# MF_PLANT_FAULT (see the plugin) plants a crash, a sticky error or a hang in one group:
# tests/test_gpu_check.py rehearses with them.
#
# Each step prints one line, "STEP <name>: <result> (rc, seconds of its timeout)", the tests
# step one line per group before it. Files, few and small, in $OUT (default benchmarks/out):
# build.log, tests_<group>.log, tests.jsonl (each test's start, outcome and seconds, appended as
# it happens, so a group cut by the budget or a crash keeps what it finished), bench.log,
# bench_tests.jsonl (the same for the benchmarks), bench_ops.jsonl and bench_model.jsonl (each
# benchmark's median as it finishes), results.md and bench.png (the table of both), and
# sanitize_memcheck.log, sanitize_racecheck.log, wheel.log when asked for. No wheel file.
# Exit status 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export MASKRCNN_FAST_CUDA=1
export MASKRCNN_FAST_EMU=0  # the emulated-CUDA extension is for machines without a GPU
export PYTHONUNBUFFERED=1

T_BUILD=${GPU_CHECK_BUILD_TIMEOUT:-120}  # the dry run's slow CPU build sets its own
# The others may be set too (GPU_CHECK_TESTS_TIMEOUT=...), within the same limit: the tests of
# this script plant timeouts with them.
T_TESTS=${GPU_CHECK_TESTS_TIMEOUT:-140} T_BENCH_OPS=${GPU_CHECK_BENCH_OPS_TIMEOUT:-90}
T_BENCH_MODEL=${GPU_CHECK_BENCH_MODEL_TIMEOUT:-80} T_USER=${GPU_CHECK_USER_PATHS_TIMEOUT:-110}
T_MEMCHECK=110 T_RACECHECK=130 T_WHEEL=120
LIMIT=540

# The CUDA tests in groups, each its own pytest process, in order of value: a sticky CUDA error
# or a crash ends its group only. "rest" is every other test file, so no CUDA case is left out.
TEST_GROUPS=(
  "parity|tests/test_cuda_matches_cpu.py"
  "ops-roi|tests/test_roi_align.py tests/test_multilevel_roi_align.py tests/test_paste_masks.py tests/test_mask_targets.py tests/test_packed_mask_targets.py"
  "ops-box|tests/test_nms.py tests/test_box_iou.py tests/test_match_boxes.py tests/test_box_coder.py tests/test_rpn_proposals.py tests/test_anchors.py tests/test_detection_postprocess.py"
  "model|tests/test_model.py tests/test_dropin.py"
  "graphs-train|tests/test_compile.py tests/test_engine.py tests/test_backbone_training.py"
  "fuzz|tests/fuzz"
  "rest|"
)
USER_PATHS_FILE=tests/test_gpu_user_paths.py  # the user-paths step's, not a group's

SANITIZE=0; WHEEL=0; BENCH=1; TESTS=1; USER_PATHS=1; WANT_USER_PATHS=0; COLLECT=0; REHEARSE=0; ONLY_GROUPS=""
for arg in "$@"; do
  case "$arg" in
    --sanitize) SANITIZE=1; BENCH=0; TESTS=0; USER_PATHS=0 ;;
    --wheel) WHEEL=1 ;;
    --no-bench) BENCH=0 ;;
    --no-tests) TESTS=0 ;;
    --no-user-paths) USER_PATHS=0 ;;
    --user-paths) WANT_USER_PATHS=1 ;;
    --collect-only) COLLECT=1 ;;
    --rehearse) REHEARSE=1 ;;
    --groups=*) ONLY_GROUPS=",${arg#--groups=}," ;;
    *) echo "unknown option $arg (--sanitize, --wheel, --no-bench, --no-tests, --no-user-paths, --user-paths, --collect-only, --rehearse, --groups=a,b)"; exit 2 ;;
  esac
done
[ "$WANT_USER_PATHS" = 1 ] && USER_PATHS=1  # --user-paths: with --sanitize, which leaves it out otherwise
[ "$COLLECT" = 1 ] && [ "$REHEARSE" = 1 ] && { echo "--collect-only and --rehearse: choose one"; exit 2; }
for name in $(echo "$ONLY_GROUPS" | tr , ' '); do
  printf '%s\n' "${TEST_GROUPS[@]}" | grep -q "^$name|" \
    || { echo "no test group $name (groups: $(printf '%s\n' "${TEST_GROUPS[@]}" | cut -d'|' -f1 | xargs))"; exit 2; }
done
# scripts/gpu_check_plugin.py: results as they happen, the rehearsal's selection, planted faults
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
if [ "$REHEARSE" = 1 ]; then
  export MF_REHEARSE_PER_FILE=${MF_REHEARSE_PER_FILE:-3}
  export MF_BENCH_BUDGET=${MF_BENCH_BUDGET:-0.02}
else
  unset MF_REHEARSE_PER_FILE
fi

total=$T_BUILD
[ "$TESTS" = 1 ] && total=$((total + T_TESTS))
[ "$USER_PATHS" = 1 ] && total=$((total + T_USER))
[ "$BENCH" = 1 ] && total=$((total + T_BENCH_OPS + T_BENCH_MODEL))
[ "$SANITIZE" = 1 ] && total=$((total + T_MEMCHECK + T_RACECHECK))
[ "$WHEEL" = 1 ] && total=$((total + T_WHEEL))
if [ "$COLLECT" = 0 ] && [ "$total" -gt "$LIMIT" ]; then
  echo "these steps may take ${total} s, over the ${LIMIT} s one call may spend: split them" \
       "over two calls (e.g. --wheel with --no-bench)"
  exit 2
fi

status=0
step() { echo; echo "=== $* ($(date +%T))"; }

pytest_line() {  # pytest's closing line in a log
  grep -E "[0-9]+ (passed|failed|errors?|skipped|deselected|selected|tests? collected)|no tests (ran|collected)" "$1" \
    2>/dev/null | tail -1 | sed -E 's/^=+ //; s/ =+$//'
}

# "STEP name: summary (rc R, S s of T s)"; by default the summary is pytest's closing line.
report() {  # name rc seconds timeout log [summary]
  local name=$1 rc=$2 secs=$3 limit=$4 log=$5 summary=${6:-}
  [ -n "$summary" ] || summary=$(pytest_line "$log")
  case "$rc" in
    0) ;;
    124|137) summary="TIMED OUT ${summary:+(}${summary}${summary:+)}"; status=1 ;;
    *) status=1 ;;
  esac
  echo "STEP $name: ${summary:-no summary} (rc $rc, ${secs} s of ${limit} s)"
}

# Runs a step under its timeout; SIGINT first, so pytest still prints what ran.
timed() {  # timeout log command...
  local limit=$1 log=$2; shift 2
  timeout -s INT -k 15 "$limit" "$@" >> "$log" 2>&1
}

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PY -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__)" \
  || { echo "STEP machine: no torch for $PY"; exit 1; }
$PY -c "import pycocotools" 2>/dev/null && echo "pycocotools: present" || echo "pycocotools: absent (COCO tests are not CUDA tests)"
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ] && [ "$REHEARSE" = 1 ]; then
  export TORCH_CUDA_ARCH_LIST=9.0  # not built for: the rehearsal reuses the build there is
elif [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") \
    || { echo "STEP machine: no GPU visible to torch (set TORCH_CUDA_ARCH_LIST for --collect-only)"; exit 1; }
  export TORCH_CUDA_ARCH_LIST
fi
echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS; steps' timeouts add up to ${total} s"
[ -z "${MF_PLANT_FAULT:-}" ] || echo "MF_PLANT_FAULT=$MF_PLANT_FAULT: faults are planted (test-only), this run proves nothing about the kernels"

step "build against this torch"
# build/ is kept between calls on a machine: ninja recompiles what changed. The stamp also skips
# the link when nothing did, in case the copied sources arrive with new timestamps.
stamp=$({ $PY -c "import sys, torch; print(sys.version, torch.__version__, torch.version.cuda)"
          echo "$TORCH_CUDA_ARCH_LIST"; find csrc setup.py maskrcnn_fast/_ext/schemas.py -type f | LC_ALL=C sort | xargs cat; } | sha256sum | cut -c1-16)
t0=$SECONDS
if [ -f build/gpu_check.stamp ] && [ "$(cat build/gpu_check.stamp)" = "$stamp" ] \
   && ls maskrcnn_fast/_C*.so >/dev/null 2>&1 && $PY -c "import maskrcnn_fast as m; assert m.build_info()['cuda_kernels']" 2>/dev/null; then
  report build 0 0 "$T_BUILD" - "up to date, not rebuilt"
elif [ "$REHEARSE" = 1 ]; then
  report build 0 0 "$T_BUILD" - "rehearsal: the existing build, not rebuilt"
else
  rm -f maskrcnn_fast/_C*.so maskrcnn_fast/_build_config.py build/gpu_check.stamp
  : > "$OUT/build.log"
  timed "$T_BUILD" "$OUT/build.log" $PY setup.py build_ext --inplace
  rc=$?
  report build "$rc" $((SECONDS - t0)) "$T_BUILD" - "$(grep -cE '^\[[0-9]+/[0-9]+\]' "$OUT/build.log") compile steps"
  [ "$rc" = 0 ] || { tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
fi
REHEARSE=$REHEARSE $PY -c "
import os, maskrcnn_fast
info = maskrcnn_fast.build_info()
print(info)
if os.environ['REHEARSE'] == '1':
    assert info['extension'] and info['emulated_cuda'], 'the rehearsal needs the built extension and its emulated CUDA kernels (make build)'
else:
    assert info['cuda_kernels'], 'the extension has no CUDA kernels'
" || exit 1
[ "$REHEARSE" = 1 ] || echo "$stamp" > build/gpu_check.stamp

if [ "$TESTS" = 1 ]; then
  n=0
  for g in "${TEST_GROUPS[@]}"; do [ -z "$ONLY_GROUPS" ] || [[ "$ONLY_GROUPS" == *",${g%%|*},"* ]] && n=$((n + 1)); done
  step "CUDA tests (pytest -m cuda), $n groups, each its own process"
  rm -f "$OUT"/tests_*.log "$OUT/tests.jsonl"
  t0=$SECONDS
  ignores=() lines=() bad=() worst=0
  for g in "${TEST_GROUPS[@]}"; do
    for f in ${g#*|}; do ignores+=("--ignore=$f"); done
  done
  ignores+=("--ignore=$USER_PATHS_FILE")  # its own step
  for g in "${TEST_GROUPS[@]}"; do
    name=${g%%|*} files=(${g#*|})
    [ -z "$ONLY_GROUPS" ] || [[ "$ONLY_GROUPS" == *",$name,"* ]] || continue
    [ "${#files[@]}" -gt 0 ] || files=(tests "${ignores[@]}")
    log="$OUT/tests_$name.log"
    : > "$log"
    # Each group gets what is left of the step's budget: the budget holds, whatever crashes.
    left=$((T_TESTS - (SECONDS - t0)))
    if [ "$left" -lt 5 ]; then
      lines+=("  group $name: not run, the step's budget is spent"); bad+=("$name not run"); worst=124
      echo "${lines[-1]}"; continue
    fi
    g0=$SECONDS tries=0 after=()
    while :; do
      if [ "$COLLECT" = 1 ]; then
        timed "$left" "$log" $PY -m pytest "${files[@]}" -q -m cuda -p no:cacheprovider --collect-only
        rc=$?; break
      fi
      read -r n_unfinished n_sticky _ _ < <($PY scripts/gpu_check_plugin.py state "$OUT/tests.jsonl" "$name")
      MF_GROUP=$name MF_RESULTS="$OUT/tests.jsonl" MF_RESUME=$tries timed "$left" "$log" \
        $PY -m pytest "${files[@]}" -q -m cuda -p no:cacheprovider -p gpu_check_plugin --maxfail=30
      rc=$?
      read -r u s last_u last_s < <($PY scripts/gpu_check_plugin.py state "$OUT/tests.jsonl" "$name")
      case "$rc" in 124|137) break ;; esac
      if [ "$u" -gt "$n_unfinished" ]; then after+=("crashed in $last_u")
      elif [ "$s" -gt "$n_sticky" ]; then after+=("hit a sticky CUDA error in $last_s")
      else break; fi
      # The rest of the group has not run: a fresh process (a fresh CUDA context) takes it up
      # after that test, twice at most, so a kernel broken for every case cannot spend the budget.
      tries=$((tries + 1)) left=$((T_TESTS - (SECONDS - t0)))
      [ "$tries" -le 2 ] && [ "$left" -ge 5 ] || break
      echo "=== gpu_check.sh: group $name ${after[-1]}; taking up the rest in a new process" >> "$log"
    done
    if [ "$COLLECT" = 1 ]; then
      summary=$(pytest_line "$log")
    else
      summary=$($PY scripts/gpu_check_plugin.py counts "$OUT/tests.jsonl" "$name")
    fi
    for a in "${after[@]}"; do bad+=("$name $a"); done
    if [ "${#after[@]}" -gt 0 ]; then
      summary="$summary; $(printf '%s; ' "${after[@]}" | sed 's/; $//')"
      case "$rc" in 0|5) rc=1 ;; esac  # the group's last process passed; the group did not
    fi
    [ "$tries" = 0 ] || summary="$summary; taken up again $tries time(s)"
    case "$rc" in
      0) ;;
      5) rc=0; summary="nothing selected" ;;  # a group with no CUDA case (yet)
      124|137) cut=$last_u; [ "$u" -gt "$n_unfinished" ] || cut="collection or between tests"
               summary="TIMED OUT: $summary; cut in $cut"; worst=124; bad+=("$name timed out in $cut") ;;
      *) if [ "$rc" -gt 128 ]; then summary="CRASHED: $summary"
         elif [ "${#after[@]}" = 0 ]; then bad+=("$name failed"); fi
         [ "$worst" = 124 ] || worst=$rc ;;
    esac
    grep -E "^(FAILED|ERROR)" "$log" | head -10
    lines+=("  group $name: $summary (rc $rc, $((SECONDS - g0)) s of $left s left)")
    echo "${lines[-1]}"
  done
  if [ "$COLLECT" = 1 ]; then
    total_line="$(cat "$OUT"/tests_*.log | grep -oE '^[0-9]+(/[0-9]+)? tests? (collected|selected)' \
      | awk -F'[/ ]' '{n += $1} END {print n + 0}') tests collected"
  else
    total_line=$($PY scripts/gpu_check_plugin.py counts "$OUT/tests.jsonl")
  fi
  [ "${#bad[@]}" = 0 ] || total_line="$total_line; $(printf '%s; ' "${bad[@]}" | sed 's/; $//')"
  report tests "$worst" $((SECONDS - t0)) "$T_TESTS" - "$total_line"
fi

if [ "$USER_PATHS" = 1 ]; then
  # The user's CUDA paths (train with and without --amp, eval, predict, export pt2 and its package,
  # capture of optimize_for_inference's model, the NCCL set-up), each against the CPU: one pytest
  # process. The rehearsal runs every case's twin on the emulated kernels, not 3.
  step "user paths on CUDA ($USER_PATHS_FILE)"
  limit=$T_USER
  # The twins emulate the CUDA kernels with a thread per CUDA thread and run the CPU oracle beside
  # them on 2 busy cores: the rehearsal gives this step MF_REHEARSE_USER_FACTOR (3) times its
  # budget; the plan above is checked with the GPU's.
  [ "$REHEARSE" = 1 ] && limit=$((T_USER * ${MF_REHEARSE_USER_FACTOR:-3}))
  log="$OUT/user_paths.log"
  : > "$log"
  rm -f "$OUT/user_paths.jsonl"
  t0=$SECONDS
  up=(-m pytest "$USER_PATHS_FILE" -q -m cuda -p no:cacheprovider -rs)
  if [ "$COLLECT" = 1 ]; then
    timed "$limit" "$log" $PY "${up[@]}" --collect-only
    rc=$?; summary=$(pytest_line "$log")
  else
    MF_BENCH_MODELS=${MF_BENCH_MODELS:-fasterrcnn_resnet50_fpn,maskrcnn_resnet50_fpn,retinanet_resnet50_fpn,ssdlite320_mobilenet_v3_large} \
    MF_REHEARSE_PER_FILE=${MF_REHEARSE_PER_FILE:+100} MF_GROUP=user-paths MF_RESULTS="$OUT/user_paths.jsonl" \
      timed "$limit" "$log" $PY "${up[@]}" -p gpu_check_plugin
    rc=$?
    summary=$($PY scripts/gpu_check_plugin.py summary "$OUT/user_paths.jsonl" user-paths)
  fi
  grep -E "^(FAILED|ERROR|SKIPPED)" "$log" | head -10
  report user-paths "$rc" $((SECONDS - t0)) "$limit" "$log" "$summary"
fi

if [ "$SANITIZE" = 1 ]; then
  SAN=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool"
    limit=$T_MEMCHECK; [ "$tool" = racecheck ] && limit=$T_RACECHECK
    log="$OUT/sanitize_$tool.log"
    : > "$log"
    t0=$SECONDS
    if [ "$COLLECT" = 1 ]; then  # the cases themselves, on the CPU kernels
      MF_SANITIZE_DEVICE=cpu timed "$limit" "$log" $PY scripts/sanitize_cases.py
    elif [ "$REHEARSE" = 1 ]; then  # the same cases on the emulated CUDA kernels, no sanitizer
      MF_SANITIZE_DEVICE=emu timed "$limit" "$log" $PY scripts/sanitize_cases.py
    else
      timed "$limit" "$log" "$SAN" --tool "$tool" --error-exitcode 3 $PY scripts/sanitize_cases.py
    fi
    rc=$?
    grep -E "^FAIL|Invalid|Race|Error" "$log" | grep -v "ERROR SUMMARY: 0" | head -20
    report "sanitize-$tool" "$rc" $((SECONDS - t0)) "$limit" "$log" \
      "$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)$(grep -hE '(ERROR|RACECHECK) SUMMARY' "$log" | tail -1 | sed 's/^========= */; /')"
  done
fi

if [ "$WHEEL" = 1 ]; then
  step "wheel for $TORCH_CUDA_ARCH_LIST, installed into a fresh venv"
  WDIR=$(mktemp -d)
  log="$OUT/wheel.log"
  : > "$log"
  t0=$SECONDS
  # The in-place build's objects: bdist_wheel only links (--skip-build: a second build_ext
  # would add torch's flags twice and recompile everything).
  temp=$($PY -c "import sys, sysconfig; print(f'build/temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}')")
  export WHEEL_DEVICE=cuda WHEEL_ARCH=${TORCH_CUDA_ARCH_LIST%%;*}
  [ "$COLLECT" = 1 ] || [ "$REHEARSE" = 1 ] && WHEEL_DEVICE=cpu
  cat > "$WDIR/check.py" <<'PYEOF'
import os, sys, torch, torchvision, maskrcnn_fast
info = maskrcnn_fast.build_info()
print("wheel:", os.listdir("dist"), info)
assert maskrcnn_fast.__file__.startswith(sys.prefix), maskrcnn_fast.__file__  # not the source tree
assert info["cuda_kernels"] and os.environ["WHEEL_ARCH"].replace("+PTX", "") in " ".join(info["cuda_arch_list"]), info
dev = os.environ["WHEEL_DEVICE"]
b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], device=dev)
s = torch.tensor([0.9, 0.8, 0.7], device=dev)
keep = maskrcnn_fast.ops.nms(b, s, 0.5)
assert torch.equal(keep, torchvision.ops.nms(b, s, 0.5)), keep
print(f"nms on {dev} from the wheel: {keep.tolist()}")
PYEOF
  timed "$T_WHEEL" "$log" bash -c 'set -e
    "$1" setup.py build --build-base "$2/build" --build-temp "$3" bdist_wheel --skip-build --dist-dir "$2/dist"
    py=$("$1" scripts/overlay_venv.py "$2/venv")
    "$py" -m pip install -q --no-deps --no-index --disable-pip-version-check "$2"/dist/*.whl
    cd "$2" && "$py" check.py' wheel "$PY" "$WDIR" "$temp"
  rc=$?
  [ "$rc" = 0 ] || tail -20 "$log"
  report wheel "$rc" $((SECONDS - t0)) "$T_WHEEL" "$log" "$(grep -E '^nms on' "$log" | tail -1)"
  rm -rf "$WDIR"
fi

if [ "$BENCH" = 1 ]; then
  : > "$OUT/bench.log"
  bench=(-m pytest -q -o "python_files=bench_*.py" -o "python_functions=bench_*" -p no:cacheprovider
         -p gpu_check_plugin --benchmark-only --benchmark-columns=median,rounds)
  [ "$COLLECT" = 1 ] && bench+=(--collect-only)
  bench_device=cuda
  [ "$REHEARSE" = 1 ] && bench_device=cpu  # the first of each file, MF_BENCH_BUDGET 0.02 s
  rm -f "$OUT/bench_tests.jsonl"
  for part in ops model; do
    step "CUDA benchmarks: $part"
    if [ "$part" = ops ]; then
      limit=$T_BENCH_OPS; files=(benchmarks --ignore=benchmarks/bench_model.py --ignore=benchmarks/bench_train.py
                                 --ignore=benchmarks/bench_torchvision_models.py --ignore=benchmarks/bench_dense.py)
      # the deploy benchmark skips on CUDA; on the CPU it would compile a package for minutes
      [ "$REHEARSE" = 1 ] && files+=(--ignore=benchmarks/bench_deploy.py)
    else
      # torchvision's own models last (accelerate_torchvision on/off): what is left of the budget
      limit=$T_BENCH_MODEL; files=(benchmarks/bench_model.py benchmarks/bench_train.py benchmarks/bench_torchvision_models.py)
    fi
    rm -f "$OUT/bench_$part.jsonl"
    t0=$SECONDS
    MF_BENCH_MODELS=${MF_BENCH_MODELS:-fasterrcnn_resnet50_fpn,maskrcnn_resnet50_fpn,retinanet_resnet50_fpn,ssdlite320_mobilenet_v3_large} \
    MF_REHEARSE_PER_FILE=${MF_REHEARSE_PER_FILE:+${MF_REHEARSE_BENCH_PER_FILE:-1}} MF_BENCH_DEVICE=$bench_device MF_BENCH_BUDGET=${MF_BENCH_BUDGET:-0.2} MF_BENCH_STREAM="$OUT/bench_$part.jsonl" \
      MF_GROUP=$part MF_RESULTS="$OUT/bench_tests.jsonl" timed "$limit" "$OUT/bench.log" $PY "${bench[@]}" "${files[@]}"
    rc=$?
    [ "$rc" = 0 ] || grep -E "^(FAILED|ERROR)|Error" "$OUT/bench.log" | tail -10
    summary=$(pytest_line "$OUT/bench.log")
    [ "$COLLECT" = 1 ] || summary="$(cat "$OUT/bench_$part.jsonl" 2>/dev/null | wc -l) recorded; $($PY scripts/gpu_check_plugin.py summary "$OUT/bench_tests.jsonl" "$part")"
    report "bench-$part" "$rc" $((SECONDS - t0)) "$limit" "$OUT/bench.log" "$summary"
  done
  if [ "$COLLECT" = 0 ]; then
    step "table"
    $PY benchmarks/report.py "$OUT/bench_ops.jsonl" "$OUT/bench_model.jsonl" --out "$OUT" || status=1
  fi
fi

step "done, status $status"
exit $status
