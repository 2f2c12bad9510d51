"""The CUDA kernels are built wherever they can be, and compile to 128-bit global loads and stores.

No GPU needed: the SASS of the built extension is read with the cuobjdump that triton's wheel ships.
"""
import importlib.util
import os
import re
import shutil
import subprocess

import pytest
import torch

import sgg_kernels

from sgg_kernels import backends

DTYPES_MANGLED = {"float32": "If", "float64": "Id", "float16": "I6__half", "bfloat16": "I13__nv_bfloat16"}


def nvcc_available() -> bool:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    return bool(shutil.which("nvcc")) or bool(home and os.path.isfile(os.path.join(home, "bin", "nvcc")))


def cuobjdump():
    spec = importlib.util.find_spec("triton")
    candidates = [os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin", "cuobjdump")] if spec else []
    candidates.append(shutil.which("cuobjdump"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def test_extension_has_cuda_kernels_when_they_can_be_built():
    if torch.version.cuda is None or not nvcc_available():
        pytest.skip(f"torch {torch.__version__} is not a CUDA build or nvcc is missing: a CPU-only build is expected")
    assert backends.cuda_built(), (
        "torch is a CUDA build and nvcc is on this machine, but the sgg library has no CUDA kernels: "
        "setup.py built it CPU-only (see its 'sgg_kernels: building ...' line)")


@pytest.fixture(scope="module")
def dense_kernels_sass():
    if not backends.cuda_built():
        pytest.skip("the extension was built without CUDA")
    tool = cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (triton's wheel ships one in triton/backends/nvidia/bin)")
    sass = subprocess.run([tool, "-sass", sgg_kernels.library_path()], capture_output=True, text=True, check=True,
                          timeout=300).stdout
    functions = re.split(r"^\s*Function : ", sass, flags=re.M)[1:]
    return {f.split(None, 1)[0]: f for f in functions if "dense_guidance_kernel" in f.split(None, 1)[0]}


@pytest.mark.parametrize("dtype", DTYPES_MANGLED)
def test_dense_kernels_use_128_bit_loads_and_stores(dense_kernels_sass, dtype):
    kernels = {name: body for name, body in dense_kernels_sass.items() if DTYPES_MANGLED[dtype] + "Lb" in name}
    # One kernel per combination of present operands (uncond, weak, step), per target architecture.
    assert len(kernels) >= 8, sorted(dense_kernels_sass)
    for name, body in kernels.items():
        assert re.search(r"\bLDG\.E\.128\b", body), f"{name}: no 128-bit global load"
        assert re.search(r"\bSTG\.E\.128\b", body), f"{name}: no 128-bit global store"
