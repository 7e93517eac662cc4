#!/usr/bin/env bash
# On a machine with a GPU and its own torch (no network, nothing installed from registries):
# build the extension for this GPU's architecture, run the CUDA tests and the CUDA benchmarks,
# print the table. Budget: under 8 minutes on an H100 (each step has its own timeout:
# build 200 s, tests 100 s, benchmarks 170 s). The tests include the model parity on CUDA and
# the benchmarks the model on CUDA (fp32 and autocast fp16, batch 1 and 8, with and without
# CUDA-graph replay).
#
#   bash scripts/gpu_check.sh            # build + CUDA tests + CUDA benchmarks
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

step "CUDA benchmarks"
MF_BENCH_DEVICE=cuda MF_BENCH_BUDGET=${MF_BENCH_BUDGET:-0.3} timeout 170 $PY -m pytest benchmarks -q \
  -o python_files='bench_*.py' -o python_functions='bench_*' -p no:cacheprovider \
  --benchmark-only --benchmark-json="$OUT/bench.json" --benchmark-columns=median,rounds \
  > "$OUT/bench.log" 2>&1 || { tail -30 "$OUT/bench.log"; status=1; }
$PY benchmarks/report.py "$OUT/bench.json" --out "$OUT" || status=1

step "done, status $status"
exit $status
