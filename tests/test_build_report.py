"""What a new user sees before anything runs: the build says what it compiles, why, about how long,
and how to skip the CUDA part; an unbuilt source tree says how to fix it."""
import os
import shutil
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_py_says(env_changes: dict) -> str:
    """What `python setup.py --version` prints before building anything (setup.py's top level runs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SGG_NO_CUDA", "CUDA_HOME", "CUDA_PATH")}
    env.update(env_changes)
    result = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_sgg_no_cuda_builds_the_cpu_kernels_only_and_says_so():
    out = setup_py_says({"SGG_NO_CUDA": "1"})
    reason = "SGG_NO_CUDA=1" if torch.version.cuda else "is not a CUDA build"
    assert "compiling the CPU kernels only (" in out and reason in out, out
    assert "minute" in out, out  # about how long


def test_a_found_toolkit_is_named_with_the_time_and_the_switch_to_skip_it(tmp_path):
    if torch.version.cuda is None:
        out = setup_py_says({})
        assert f"torch {torch.__version__} is not a CUDA build" in out, out
        return
    toolkit = tmp_path / "cuda"  # what setup.py checks a toolkit root for: bin/nvcc and cuda_runtime.h
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    out = setup_py_says({"CUDA_HOME": str(toolkit)})
    assert f"compiling the CPU and the CUDA kernels, because torch {torch.__version__} is a CUDA build and " \
           f"CUDA_HOME (or CUDA_PATH) is {toolkit}" in out, out
    assert "minutes" in out and "set SGG_NO_CUDA=1" in out, out


def test_importing_an_unbuilt_source_tree_names_both_fixes(tmp_path):
    # A clone's root before any build: the package sources and setup.py, no library.
    shutil.copytree(os.path.join(ROOT, "sgg_kernels"), tmp_path / "sgg_kernels",
                    ignore=shutil.ignore_patterns("*.so", "_build_info.json", "__pycache__"))
    shutil.copy(os.path.join(ROOT, "setup.py"), tmp_path / "setup.py")
    result = subprocess.run([sys.executable, "-c", "import sgg_kernels"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert f"the unbuilt source tree in {tmp_path}" in message, message
    assert "`make build`" in message and "build_ext --inplace" in message, message
    assert "run from another directory" in message, message
