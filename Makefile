# Two entry points (see README): `make demo` runs the main job end to end; `make test` passes the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SERVE_VENV ?= .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed

.PHONY: setup demo test lint typecheck unit dispatch gate test-serve test-slow clean

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

unit: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q -m "not slow and not gpu and not tensorrt"

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

test: lint typecheck unit dispatch gate test-serve

test-slow: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q -m "slow"

clean:
	rm -rf $(VENV) $(SERVE_VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
