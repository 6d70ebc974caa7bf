# Two entry points (see README): `make demo` runs the main job end to end; `make test` passes the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SERVE_VENV ?= .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed

.PHONY: setup demo test lint typecheck kernels-cache unit dispatch gate test-serve test-slow gpu-check perf-analyzer clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 -c requirements/constraints.txt
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[train,dev]'
	$(BIN)/python -m pip install -q --no-deps tensorrt-stubs
	touch $(STAMP)

setup: $(STAMP)

# A real Triton server (PyTriton's bundled binary) needs NumPy < 2 in its Python backend, so the serving
# tests run in a second environment of their own.
$(SERVE_STAMP): pyproject.toml requirements/constraints.txt requirements/serve.txt
	test -x $(SERVE_VENV)/bin/python || $(PY) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install -q torch==2.13.0 -c requirements/constraints.txt
	$(SERVE_VENV)/bin/python -m pip install -q -c requirements/constraints.txt -c requirements/serve.txt \
		-e '.[train,serve,dev]'
	touch $(SERVE_STAMP)

demo: $(STAMP)
	$(BIN)/hhrnet demo --out demo_out

lint: $(STAMP)
	$(BIN)/ruff check hhrnet kernels export benchmarks tests
	$(BIN)/ruff format --check hhrnet kernels export benchmarks tests

# mypy cannot follow setuptools' package-dir mapping, so it checks a copy laid out as installed.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck
	cp -r hhrnet build/typecheck/hhrnet
	cp -r kernels build/typecheck/hhrnet/kernels
	cp -r export build/typecheck/hhrnet/export
	cp -r benchmarks build/typecheck/hhrnet/benchmarks
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p hhrnet

# Two pytest-xdist workers (TEST_WORKERS=0: one process); --dist loadfile runs each file's tests in one worker, so
# module fixtures are built once. Many tests wait on a subprocess (the CLI, a server), so two workers fit 2 cores.
TEST_WORKERS ?= 2
unit: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q -m "not slow and not gpu and not tensorrt" \
		$(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The tests whose exact results depend on how the CPU dispatches (OpenCV's SIMD code, torch's ATen and oneDNN ISA,
# NumPy's SIMD, Numba's code generation), again with the dispatch forced: AVX2 instead of AVX-512 everywhere, and
# no AVX2 at all. OpenCV's IPP switch is forced on and off inside the golden warp test itself. An OpenCV feature
# name this CPU does not have only prints a warning.
DISPATCH_TESTS := tests/test_targets.py tests/test_transforms.py tests/test_inference.py tests/test_model.py \
	tests/test_decode_fast.py tests/test_losses.py
DISPATCH_SELECT := golden or bit_for_bit or bit_exact or any_ratio or naive or twin or official_port
CV_NO_AVX512 := AVX512-SKX,AVX512-CLX,AVX512-CNL,AVX512-ICL,AVX512-KNL,AVX512-KNM,AVX512-COMMON
DISPATCH_RUN = NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(DISPATCH_TESTS) -k "$(DISPATCH_SELECT)"
dispatch: $(STAMP)
	OPENCV_CPU_DISABLE=$(CV_NO_AVX512) ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
		NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" NUMBA_CPU_NAME=haswell $(DISPATCH_RUN)
	OPENCV_CPU_DISABLE=$(CV_NO_AVX512),AVX2,FMA3,AVX_VNNI ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 \
		ONEDNN_MAX_CPU_ISA=SSE41 NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR" $(DISPATCH_RUN)

gate: $(STAMP)
	$(BIN)/hhrnet bench gate

test-serve: $(SERVE_STAMP)
	$(SERVE_VENV)/bin/python -m pytest -q -m "not gpu and not tensorrt" tests/test_serve_server.py

# Set-up on two cores: ruff, mypy and a compile of the decoder's Numba kernels into their on-disk cache (so that the
# test workers load them instead of each compiling them) run beside the serving environment's install, which is
# mostly download and unpacking; then the tests in order.
test: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target lint typecheck $(SERVE_STAMP) kernels-cache
	$(MAKE) --no-print-directory unit dispatch gate test-serve gpu-check

kernels-cache: $(STAMP)
	$(BIN)/python -c "from hhrnet.kernels.decode import warmup; warmup()"

# The prepared GPU check (benchmarks/gpu_check.py): on a GPU machine every section, <= 8 min; without a GPU its
# CPU side (~30 s) and one line saying so. It needs no pip install: on a lent machine run `make gpu-check` from a
# bare checkout with the machine's own Python (the venv's when there is one). Results: $$OUT or gpu_check_out/.
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py --out $${OUT:-gpu_check_out} $(GPU_CHECK_ARGS)

test-slow: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q -m "slow"

# Triton's perf_analyzer against `hhrnet serve` of the tiny model, beside our own client (benchmarks/serve.py), in
# the serving environment. PyPI's perf-analyzer is a placeholder; the tritonclient 2.41.0 wheel bundles the real
# binary, which needs libb64.so.0d (Debian's libb64-0d) and libcudart.so.12 (the nvidia-cuda-runtime-cu12 wheel,
# put beside the binary). Opt-in: not part of make test. Results: $$OUT or perf_analyzer_out/.
PA_DIR := $(SERVE_VENV)/perf_analyzer
PA_BIN := $(PA_DIR)/perf_analyzer
$(PA_BIN): $(SERVE_STAMP)
	ldconfig -p | grep -q libb64.so.0d || (apt-get update -q && apt-get install -y -q libb64-0d)
	rm -rf $(PA_DIR) && mkdir -p $(PA_DIR)/wheels
	$(SERVE_VENV)/bin/python -m pip download -q --no-deps -d $(PA_DIR)/wheels tritonclient==2.41.0 \
		'nvidia-cuda-runtime-cu12>=12,<13'
	cd $(PA_DIR) && ../bin/python -c "import glob, os, shutil, zipfile; \
		w = lambda p: zipfile.ZipFile(glob.glob('wheels/' + p)[0]); \
		open('perf_analyzer', 'wb').write(w('tritonclient-2.41.0-*.whl').read('tritonclient-2.41.0.data/data/bin/perf_analyzer')); \
		open('libcudart.so.12', 'wb').write(w('nvidia_cuda_runtime_cu12-*.whl').read('nvidia/cuda_runtime/lib/libcudart.so.12')); \
		os.chmod('perf_analyzer', 0o755); shutil.rmtree('wheels')"

perf-analyzer: $(PA_BIN)
	$(SERVE_VENV)/bin/python -m hhrnet.benchmarks.serve --tiny --perf-analyzer $(PA_BIN) --out $${OUT:-perf_analyzer_out} \
		$(PA_ARGS)

clean:
	rm -rf $(VENV) $(SERVE_VENV) demo_out gpu_check_out perf_analyzer_out .pytest_cache .mypy_cache .ruff_cache
