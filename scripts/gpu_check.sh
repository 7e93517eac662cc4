#!/usr/bin/env bash
# On a machine with a GPU and its own torch (no network, nothing installed from registries):
# build the extension for this GPU's architecture, run the CUDA tests and the CUDA benchmarks,
# print the table. Budget: under 8 minutes on an H100 (each step has its own timeout:
# build 200 s, tests 100 s, benchmarks 170 s). The tests include the model parity on CUDA and
# the benchmarks the model on CUDA (fp32 and autocast fp16, batch 1 and 8, with and without
# CUDA-graph replay).
#
#   bash scripts/gpu_check.sh            # build + CUDA tests + CUDA benchmarks
#   bash scripts/gpu_check.sh --sanitize # + compute-sanitizer memcheck and racecheck on one
#                                        #   small case of every CUDA kernel (scripts/sanitize_cases.py)
#   bash scripts/gpu_check.sh --wheel    # + build a wheel for this GPU, install it into a fresh
#                                        #   venv (sees this torch) and run an op on the GPU
#   bash scripts/gpu_check.sh --no-bench # skip the benchmarks (e.g. with --sanitize --wheel)
#   PYTHON=python3.12 bash scripts/gpu_check.sh
#
# Output (logs, bench.json, results.md, bench.png) goes to $OUT when set, else benchmarks/out.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export MASKRCNN_FAST_CUDA=1
export PYTHONUNBUFFERED=1
status=0
SANITIZE=0; WHEEL=0; BENCH=1
for arg in "$@"; do
  case "$arg" in
    --sanitize) SANITIZE=1 ;;
    --wheel) WHEEL=1 ;;
    --no-bench) BENCH=0 ;;
    *) echo "unknown option $arg (--sanitize, --wheel, --no-bench)"; exit 2 ;;
  esac
done

step() { echo; echo "=== $* ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__)"
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  export TORCH_CUDA_ARCH_LIST
fi
echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"

step "build against this torch"
# The .so of another torch cannot load here: always rebuild.
rm -rf build maskrcnn_fast/_C*.so
timeout 200 $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
tail -2 "$OUT/build.log"
$PY -c "import maskrcnn_fast; print(maskrcnn_fast.build_info())" || exit 1

step "CUDA tests (and the CPU-vs-CUDA equality tests)"
timeout 100 $PY -m pytest tests -q --maxfail=20 -k "cuda" -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -25
[ "${PIPESTATUS[0]}" = 0 ] || status=1

if [ "$SANITIZE" = 1 ]; then
  SAN=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool"
    timeout 150 "$SAN" --tool "$tool" --error-exitcode 3 $PY scripts/sanitize_cases.py \
      > "$OUT/sanitize_$tool.log" 2>&1
    rc=$?
    grep -E "^(ok|FAIL)|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race" "$OUT/sanitize_$tool.log" | head -40
    [ "$rc" = 0 ] || { echo "compute-sanitizer $tool: rc $rc"; status=1; }
  done
fi

if [ "$WHEEL" = 1 ]; then
  step "wheel for $TORCH_CUDA_ARCH_LIST, installed into a fresh venv"
  WDIR=$(mktemp -d)
  timeout 240 $PY -m pip wheel . --no-build-isolation --no-deps -w "$WDIR/dist" > "$OUT/wheel.log" 2>&1 \
    || { tail -20 "$OUT/wheel.log"; status=1; }
  ls "$WDIR"/dist/*.whl 2>/dev/null && cp "$WDIR"/dist/*.whl "$OUT"/ 2>/dev/null
  $PY -m venv --system-site-packages "$WDIR/venv" \
    && "$WDIR/venv/bin/python" -m pip install -q --no-deps --no-index "$WDIR"/dist/*.whl \
    && (cd "$WDIR" && "$WDIR/venv/bin/python" -c "
import torch, maskrcnn_fast
info = maskrcnn_fast.build_info(); print(info)
assert '$TORCH_CUDA_ARCH_LIST'.split(';')[0].replace('+PTX', '') in ' '.join(info['cuda_arch_list'])
b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], device='cuda')
print('nms on cuda from the wheel:', maskrcnn_fast.ops.nms(b, torch.tensor([0.9, 0.8, 0.7], device='cuda'), 0.5).tolist())
") || { echo "WHEEL CHECK FAILED"; status=1; }
  rm -rf "$WDIR"
fi

if [ "$BENCH" = 1 ]; then
  step "CUDA benchmarks"
  MF_BENCH_DEVICE=cuda MF_BENCH_BUDGET=${MF_BENCH_BUDGET:-0.3} timeout 170 $PY -m pytest benchmarks -q \
    -o python_files='bench_*.py' -o python_functions='bench_*' -p no:cacheprovider \
    --benchmark-only --benchmark-json="$OUT/bench.json" --benchmark-columns=median,rounds \
    > "$OUT/bench.log" 2>&1 || { tail -30 "$OUT/bench.log"; status=1; }
  $PY benchmarks/report.py "$OUT/bench.json" --out "$OUT" || status=1
fi

step "done, status $status"
exit $status
