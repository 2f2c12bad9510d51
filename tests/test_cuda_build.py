"""The CUDA kernels are built wherever they can be, and compile to 128-bit global loads and stores
(mutually misaligned dense operands to scalar loads with no per-element index division).

No GPU needed: the SASS of the built extension is read with the cuobjdump that triton's wheel ships.
"""
import importlib.util
import os
import re
import shutil
import subprocess

import pytest
import torch

from sgg_kernels import backends
from sgg_kernels._library import cuda_library_path

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
    sass = subprocess.run([tool, "-sass", cuda_library_path()], capture_output=True, text=True, check=True,
                          timeout=300).stdout
    functions = re.split(r"^\s*Function : ", sass, flags=re.M)[1:]
    return {f.split(None, 1)[0]: f for f in functions if "dense_guidance_kernel" in f.split(None, 1)[0]}


def kernels_of(sass, dtype, aligned):
    """The dense kernels of one dtype, aligned (kAligned = true, template flag Lb1E) or not."""
    flag = DTYPES_MANGLED[dtype] + ("Lb1E" if aligned else "Lb0E")
    return {name: body for name, body in sass.items() if flag in name}


@pytest.mark.parametrize("dtype", DTYPES_MANGLED)
def test_dense_kernels_use_128_bit_loads_and_stores(dense_kernels_sass, dtype):
    kernels = kernels_of(dense_kernels_sass, dtype, aligned=True)
    # One kernel per combination of present operands (uncond, weak, step), per target architecture.
    assert len(kernels) >= 8, sorted(dense_kernels_sass)
    for name, body in kernels.items():
        assert re.search(r"\bLDG\.E\.128\b", body), f"{name}: no 128-bit global load"
        assert re.search(r"\bSTG\.E\.128\b", body), f"{name}: no 128-bit global store"


@pytest.mark.parametrize("dtype", DTYPES_MANGLED)
def test_misaligned_dense_kernels_divide_no_index_per_element(dense_kernels_sass, dtype):
    """Dense operands at different addresses modulo 16 bytes (chunk(2) halves of an odd size) ran the
    strided kernel, which divides a 64-bit index per dim and element (944 SASS instructions, 9 division
    calls for float32 on sm_90). Their kernel walks each sample's elements directly: the only division
    left is the compiler's trip count of the grid-stride loop, once per sample."""
    kernels = kernels_of(dense_kernels_sass, dtype, aligned=False)
    assert len(kernels) >= 8, sorted(dense_kernels_sass)
    for name, body in kernels.items():
        assert len(re.findall(r"\bCALL\.REL", body)) <= 1, f"{name}: division calls in the element loop"
