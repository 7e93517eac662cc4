# make test | make bench | make demo | make build: each creates .venv and builds the extension first.
# make wheel | make sdist: distributions in dist/ (docs/build.md: "Build a wheel").
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export MAX_JOBS ?= 2
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif
BENCH_OUT ?= benchmarks/out
DIST ?= dist

.PHONY: all build test bench demo fuzz sanitize clean wheel sdist gpu-env-check gpu-rehearsal gpu-env-rehearsal

all: test

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

# Incremental: ninja recompiles only what changed.
build: $(VENV)/.installed
	$(PY) setup.py build_ext --inplace
	$(PY) -c "import maskrcnn_fast; print('maskrcnn_fast', maskrcnn_fast.build_info())"

test: build
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# Differential fuzzing (tests/fuzz, hypothesis): FUZZ_EXAMPLES examples per test, random seeds;
# prints examples run and failures per test, and writes $(BENCH_OUT)/fuzz.json.
FUZZ_EXAMPLES ?= 1000
fuzz: build
	mkdir -p $(BENCH_OUT)
	MF_FUZZ_PROFILE=fuzz MF_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz -q -p no:cacheprovider \
		--fuzz-json=$(BENCH_OUT)/fuzz.json $(PYTEST_ARGS)

# The emulated CUDA kernels under sanitizers (docs/emulated-cuda.md): AddressSanitizer +
# UndefinedBehaviorSanitizer, then ThreadSanitizer, each an instrumented _C_emu under
# build/sanitize/<variant>; fails on any report. SANITIZE_M replaces the cases' marker expression
# (a pytest -m; defaults: asan "emu and not large", tsan "emu and small").
SANITIZE_VARIANTS ?= asan tsan
sanitize: build
	for v in $(SANITIZE_VARIANTS); do bash scripts/sanitize_emu.sh $$v || exit 1; done

# the benchmarks' pytest run and the report: the command line's bench (maskrcnn_fast/cli/bench.py)
bench: build
	$(PY) -m maskrcnn_fast bench --out $(BENCH_OUT) $(PYTEST_ARGS)

# The demo: a ResNet-18-FPN Mask R-CNN trained from scratch on synthetic shapes (no download),
# about 5 minutes on 2 CPU cores; evaluated on 200 held-out images (fails below mask AP50 0.7),
# then predictions drawn on held-out images in $(DEMO_DIR)/predictions (256 px, so the labels
# are legible; the model resizes its inputs to 128 px).
# One thread: these small convolutions gain little from more, and idle threads spin on a busy machine.
DEMO_DIR ?= runs/demo
DEMO_THREADS ?= 1
DEMO_DEVICE ?= cpu
DEMO_MODEL := --depth 18 --fpn-channels 64 --box-head-width 256 --mask-head-width 64 \
	--min-size 128 --max-size 128 --anchor-sizes 16 32 64 128 256 \
	--model-arg rpn_pre_nms_top_n_train=600 --model-arg rpn_post_nms_top_n_train=300 \
	--model-arg rpn_pre_nms_top_n_test=300 --model-arg rpn_post_nms_top_n_test=100 \
	--model-arg rpn_batch_size_per_image=128 --model-arg box_batch_size_per_image=128 \
	--model-arg box_detections_per_img=50
DEMO_TRAIN := --dataset synthetic --num-images 4000 --image-size 128 --data-seed 0 \
	--iterations 800 --batch-size 4 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 \
	--lr-schedule cosine --warmup-iters 50 --clip-grad-norm 10 --workers 0 --seed 0 \
	--eval-at-end --val-num-images 200 --val-data-seed 1000 --min-mask-ap50 0.7

demo: build
	$(PY) -m maskrcnn_fast train $(DEMO_MODEL) $(DEMO_TRAIN) --threads $(DEMO_THREADS) \
		--device $(DEMO_DEVICE) --output-dir $(DEMO_DIR)
	$(PY) -m maskrcnn_fast.data --out $(DEMO_DIR)/images --num 4 --seed 1000 --image-size 256
	$(PY) -m maskrcnn_fast predict $(DEMO_DIR)/images --checkpoint $(DEMO_DIR)/checkpoint.pt \
		--output-dir $(DEMO_DIR)/predictions --threads $(DEMO_THREADS) --device $(DEMO_DEVICE)

# For other machines: CUDA kernels for TORCH_CUDA_ARCH_LIST, default every architecture from 7.5
# up that this nvcc and this torch support, plus PTX of the newest; MASKRCNN_FAST_CUDA=0: CPU
# only. The wheel requires the venv's torch release. Objects in build/wheel, apart from make build's.
wheel: $(VENV)/.installed
	$(PY) -m build --wheel --no-isolation --outdir $(DIST)

# Sources only; it builds on install with `pip install --no-build-isolation`.
sdist: $(VENV)/.installed
	$(PY) -m build --sdist --no-isolation --outdir $(DIST)

# A dry run of scripts/gpu_check.sh in the GPU machine's environment (Python 3.12, torch 2.11.0
# for CUDA 13.0, torchvision 0.26.0, no pycocotools) in a scratch venv and a copy of the tree
# under build/gpu-env: the CUDA build, what each step would run, every test and benchmark
# collected. The first run builds the CUDA kernels (15-30 minutes on 2 cores); GPU_ENV_ARGS=--run-tests
# also runs the CPU tests there.
gpu-env-check:
	bash scripts/gpu_env_check.sh $(GPU_ENV_ARGS)

# scripts/gpu_check.sh run whole here, without a GPU, on the existing build (its emulated CUDA
# kernels and the CPU): the plumbing of the GPU machine's run (groups, budgets, results files,
# STEP lines, exit status); GPU_REHEARSAL_ARGS=--sanitize etc. picks the call to rehearse.
gpu-rehearsal: build
	PYTHON=$(PY) bash scripts/gpu_check.sh --rehearse $(GPU_REHEARSAL_ARGS)

# The same rehearsal in the GPU machine's environment: gpu-env-check's venv (Python 3.12, torch
# 2.11.0, no pycocotools), a copy of the tree built there with the CPU and emulated kernels
# (build/gpu-env/rehearse-tree; the first build 20-40 minutes on 2 busy cores, then a relink).
gpu-env-rehearsal:
	bash scripts/gpu_env_check.sh --rehearse $(GPU_REHEARSAL_ARGS)

clean:
	rm -rf build maskrcnn_fast/*.so maskrcnn_fast/_build_config.py $(BENCH_OUT) $(DIST) *.egg-info
