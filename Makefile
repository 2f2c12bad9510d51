# Every target sets up what it needs: a venv in .venv, torch, the extension, the extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CUDA 13.0 build of torch: the CUDA sources then compile here with the local nvcc 13.0.
TORCH_SPEC ?= torch==2.14.1

.PHONY: FORCE setup build cpp-example test bench bench-compare demo gpu-check clean

$(VENV)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps k-diffusion==0.1.1.post1   # its sampling module's imports: requirements-dev.txt
	# Source checkout on the path (like `pip install -e .`, without a second build of the extension).
	$(PY) -c "import site; open(site.getsitepackages()[0] + '/sgg_kernels_dev.pth', 'w').write('$(CURDIR)\n')"
	touch $@

setup: $(VENV)/.deps

# Rebuilds the extension in place when a C++/CUDA source changed (ninja makes this incremental).
build: setup
	$(PY) setup.py -q build_ext --inplace

# The C++ example (examples/cpp): calls the ops with no Python, through the dispatcher, a TorchScript
# module and an AOTInductor package (tests/test_deployment.py runs it). Same as its CMakeLists.txt.
# It compiles against the torch of the active `python` when that one imports torch (a user's own
# environment), else against .venv's (made by `make setup`); another: make cpp-example CPP_PYTHON=/path/to/python.
# The operator library is not built here: the program opens it at run time (its path is the argument).
CPP_EXAMPLE := build/cpp_example/sgg_cpp_example
CPP_PYTHON ?= $(shell python -c "import torch" >/dev/null 2>&1 && command -v python || echo $(PY))
TORCH_DIR = $(shell $(CPP_PYTHON) -c "import os, torch; print(os.path.dirname(torch.__file__))")
# Records which torch the program was built against, so pointing CPP_PYTHON elsewhere rebuilds it.
CPP_TORCH_STAMP := build/cpp_example/torch_dir
$(CPP_TORCH_STAMP): $(if $(filter $(PY),$(CPP_PYTHON)),$(VENV)/.deps) FORCE
	@mkdir -p $(dir $@)
	@echo "$(TORCH_DIR)" | cmp -s - $@ || echo "$(TORCH_DIR)" > $@
$(CPP_EXAMPLE): examples/cpp/main.cpp $(CPP_TORCH_STAMP)
	@echo "sgg_cpp_example: compiling against the torch in $(TORCH_DIR) ($(CPP_PYTHON); about 1 minute)"
	$(CXX) -std=c++20 -O1 -isystem $(TORCH_DIR)/include -isystem $(TORCH_DIR)/include/torch/csrc/api/include \
		$< -o $@ -L$(TORCH_DIR)/lib -Wl,-rpath,$(TORCH_DIR)/lib -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -ldl

cpp-example: $(CPP_EXAMPLE)

FORCE:

# make test runs the example against the library `make build` makes, so both use .venv's torch.
test: CPP_PYTHON = $(PY)

# The Triton kernels run on CPU tensors under the interpreter, which must be switched on before triton
# is imported: their own process (tests/triton is not collected without TRITON_INTERPRET=1).
test: build cpp-example
	$(PY) -m pytest -q tests
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests/triton
	# The benchmark suite and its report at one tiny size, one round each (~30 s): neither rots.
	SGG_BENCH_SMOKE=1 $(PY) -m benchmarks.report --no-results-md --out-dir build/bench-smoke

# The full report (CSV, benchmarks/RESULTS.md, PNG); about 7 min on the 2-core CPU machine.
bench: build
	$(PY) -m benchmarks.report

# The synthetic weak-to-strong study (sgg_kernels/demo): table on stdout, PNGs and results.csv in out/demo.
demo: build
	$(PY) -m sgg_kernels.demo --out out/demo

# The full run, then the regression guard against the stored baseline of this machine kind (CPU model or
# GPU name, and core count; sgg_kernels/bench/baselines): exit 1 when a fused op lost more than
# BENCH_THRESHOLD % of its standing against the same run's torch.compile or copy. Without a baseline of
# this kind it says so and exits 0. `python -m sgg_kernels.bench --compare` is the one-minute version.
BENCH_THRESHOLD ?= 30
bench-compare: build
	$(PY) -m benchmarks.report --compare $(BENCH_THRESHOLD) --no-results-md --out-dir build/bench-compare

gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build dist $(VENV) sgg_kernels/*.so sgg_kernels/_build_info.json
