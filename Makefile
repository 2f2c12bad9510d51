# Every target sets up what it needs: a venv in .venv, torch, the extension, the extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CUDA 13.0 build of torch: the CUDA sources then compile here with the local nvcc 13.0.
TORCH_SPEC ?= torch==2.14.1

.PHONY: FORCE setup build wheel cpp-example test test-wheel bench bench-compare demo gpu-check clean

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

# The wheel users install (README): dist/sgg_kernels-*-cp310-abi3-*.whl, one wheel for every torch from
# the stable-ABI floor (2.10) on, built against .venv's torch (2.14.1) and, where nvcc is, with the CUDA
# library. After `make build` it reuses the same objects in build/ and mostly links and zips: 27 s on the
# 2-core machine at a load of 4 to 6. --no-deps: otherwise pip also puts wheels of torch, numpy and tqdm
# into dist/.
wheel: build
	rm -f dist/sgg_kernels-*.whl
	$(PY) -m pip wheel -q --no-build-isolation --no-deps . -w dist

# A second venv with another torch than the one the wheel is built with: 2.13.0, the CPU build (pip finds
# it in the local wheel folder), plus what WHEEL_TESTS import. Made once (43 s), like .venv.
OLD_TORCH_SPEC ?= torch==2.13.0+cpu
OLD_VENV := $(CURDIR)/build/venv-torch213
OLD_PY := $(OLD_VENV)/bin/python
$(OLD_VENV)/.deps:
	$(PYTHON) -m venv $(OLD_VENV)
	$(OLD_PY) -m pip install -q --upgrade pip
	$(OLD_PY) -m pip install -q "$(OLD_TORCH_SPEC)" numpy tqdm pytest
	touch $@

# What test-wheel runs with the wheel installed next to torch 2.13: the stable-ABI checks, the installed
# package itself (wheel tag, requirements, one `generate` batch), the ops against the float64 reference,
# autograd with opcheck and torch.compile, the in-place version bump, torch.export, a process that loads
# only the library (its ops, and its refusal of calls that need a graph), sample(), and
# `python -m sgg_kernels.bench --tiny`.
WHEEL_TESTS := \
	tests/test_stable_abi.py \
	tests/test_packaging.py::test_the_installed_package_is_the_abi3_wheel \
	tests/test_packaging.py::test_one_generate_batch_runs_from_outside_the_source_tree \
	tests/test_deployment.py::test_the_library_needs_neither_python_nor_libtorch_python \
	tests/test_deployment.py::test_ops_work_in_a_process_that_only_loads_the_library \
	tests/test_deployment.py::test_compile_with_an_unbacked_batch_makes_one_graph \
	tests/test_ops.py::test_every_op_matches_reference \
	tests/test_ops.py::test_views_match_reference_and_dense_path_bit_for_bit \
	tests/test_autograd_compile.py \
	tests/test_autograd_reliability.py::test_in_place_bumps_the_version_so_autograd_sees_the_write \
	tests/test_reliability_round2.py::test_exported_program_called_with_another_weights_form_fails_its_guard_as_documented \
	tests/test_reliability_round2.py::test_library_only_process_refuses_autograd_and_import_restores_it \
	tests/test_sampler.py::test_segmented_guidance_matches_a_plain_loop \
	tests/test_bench_cli.py::test_tiny_run_from_outside_the_repository

# The wheel `make wheel` built, installed into OLD_VENV and tested there. The tests run from a copy in a
# temporary folder (tests/*.py, the export script test_deployment.py reads, pyproject.toml's pytest
# settings), with PYTHONPATH unset, so `import sgg_kernels` can only find the installed wheel (the first
# command checks that). Not tests/triton or tests/gpu: without triton installed, tests/triton on sys.path
# would be imported as `triton`.
test-wheel: wheel $(OLD_VENV)/.deps
	$(OLD_PY) -m pip install -q --no-deps --force-reinstall dist/sgg_kernels-*-cp310-abi3-*.whl
	$(OLD_PY) -m pip check
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	mkdir -p "$$tmp/tests" "$$tmp/examples/cpp" && cp tests/*.py "$$tmp/tests/" && \
	cp examples/cpp/export_modules.py "$$tmp/examples/cpp/" && cp pyproject.toml "$$tmp/" && cd "$$tmp" && \
	env -u PYTHONPATH $(OLD_PY) -c "import sys, torch, sgg_kernels; \
	assert sgg_kernels.__file__.startswith(sys.prefix + '/'), sgg_kernels.__file__; \
	print('test-wheel: the wheel built with torch', sgg_kernels._library.build_info()['torch'], \
	'in', sgg_kernels.__file__, 'on torch', torch.__version__)" && \
	env -u PYTHONPATH $(OLD_PY) -m pytest -q -rs -p no:cacheprovider $(WHEEL_TESTS)

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
	@echo "sgg_cpp_example: compiling against the torch in $(TORCH_DIR) ($(CPP_PYTHON); 33 s of CPU time on the 2-core VM, 2 min 50 s wall under load)"
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
	# The wheel, built with .venv's torch 2.14.1, installed and tested next to torch 2.13.0.
	$(MAKE) --no-print-directory test-wheel

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
