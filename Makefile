# make test | make bench | make build: each creates .venv and builds the extension first.
# make wheel | make sdist: distributions in dist/ (README: "Build a wheel").
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export MAX_JOBS ?= 2
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif
BENCH_OUT ?= benchmarks/out
DIST ?= dist

.PHONY: all build test bench fuzz clean wheel sdist

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

bench: build
	mkdir -p $(BENCH_OUT)
	$(PY) -m pytest benchmarks -q -o python_files='bench_*.py' -o python_functions='bench_*' \
		--benchmark-only --benchmark-json=$(BENCH_OUT)/bench.json \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name $(PYTEST_ARGS)
	$(PY) benchmarks/report.py $(BENCH_OUT)/bench.json --out $(BENCH_OUT)

# For other machines: CUDA kernels for TORCH_CUDA_ARCH_LIST, default every architecture from 7.5
# up that this nvcc and this torch support, plus PTX of the newest; MASKRCNN_FAST_CUDA=0: CPU
# only. The wheel requires the venv's torch release. Objects in build/wheel, apart from make build's.
wheel: $(VENV)/.installed
	$(PY) -m build --wheel --no-isolation --outdir $(DIST)

# Sources only; it builds on install with `pip install --no-build-isolation`.
sdist: $(VENV)/.installed
	$(PY) -m build --sdist --no-isolation --outdir $(DIST)

clean:
	rm -rf build maskrcnn_fast/*.so maskrcnn_fast/_build_config.py $(BENCH_OUT) $(DIST) *.egg-info
