"""One build for every torch from the floor on: the operator libraries import nothing from libtorch but
its stable C shims (no symbol of the c10, at or torch C++ namespaces, whose layout changes between
releases), each of those shims is exported by the running torch, and the loader refuses only a torch
below the floor. `make test` runs this file against a wheel built with torch 2.14.1 and installed
next to torch 2.13.0 as well.

That neither library needs libpython or libtorch_python: test_deployment.py for the core library,
test_the_cuda_library_needs_no_python_and_finds_the_core_library_next_to_it here for the CUDA one.
"""
import ctypes
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import sgg_kernels
from sgg_kernels import _library

CORE = _library.library_path()
CUDA = _library.cuda_library_path()
NOT_BUILT = pytest.mark.skipif(CUDA is None, reason="the CUDA library is not built (a CPU-only build)")
LIBRARIES = [pytest.param(CORE, id="core"), pytest.param(CUDA, id="cuda", marks=NOT_BUILT)]

# A symbol of these C++ namespaces (c10::, at::, torch::, caffe2::, also as a template argument of a
# std:: one) would tie the binary to one torch release's class layouts and mangled names.
IN_TORCH_NAMESPACE = re.compile(r"^_Z(?:N[KVRO]*)?(?:3c10|2at|5torch|6caffe2)\d")
MENTIONS_TORCH_TYPE = re.compile(r"(?<!\d)(?:3c10|2at|5torch|6caffe2)\d")
# What the C and C++ runtimes provide: versioned glibc/libstdc++/libgcc symbols, and std:: ones that the
# toolchain leaves unversioned (std::, std::ostream, ... and their typeinfo and vtables).
RUNTIME_VERSIONS = ("GLIBC_", "GLIBCXX_", "CXXABI_", "GCC_")
UNVERSIONED_STD = re.compile(r"^_Z(?:T[IVS])?(?:N[KVRO]*)?S[tabsiod]")
WEAK_TOOLCHAIN = {"_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__"}
STABLE_SHIM = ("aoti_torch_", "torch_")
SGG = re.compile(r"^(?:sgg_|_ZN3sgg|_ZNK3sgg)")


def dynamic_symbols(path, which="--undefined-only"):
    """(name, version, nm's type letter) of the library's dynamic symbols (`nm -D`)."""
    out = subprocess.run(["nm", "-D", which, path], capture_output=True, text=True, check=True, timeout=120).stdout
    symbols = []
    for line in out.splitlines():
        kind, symbol = line.split()[-2:]
        name, _, version = symbol.partition("@")
        symbols.append((name, version.lstrip("@"), kind))
    assert symbols, f"nm read no dynamic symbols from {path}"
    return symbols


def is_allowed(name, version, kind, cuda):
    """An undefined symbol the stable ABI allows: a stable C shim, or the C/C++ runtime's; for the CUDA
    library also the CUDA runtime's and the core library's sgg symbols."""
    if name.startswith(STABLE_SHIM):
        return True
    if version.startswith(RUNTIME_VERSIONS) or (kind == "w" and name in WEAK_TOOLCHAIN):
        return True
    if not version and UNVERSIONED_STD.match(name) and not MENTIONS_TORCH_TYPE.search(name):
        return True
    if cuda and (name.startswith(("cuda", "__cuda")) or version.startswith("libcudart")):
        return True
    return cuda and bool(SGG.match(name))


@pytest.mark.parametrize("path", LIBRARIES)
def test_the_libraries_import_only_the_stable_c_shims_from_libtorch(path):
    symbols = dynamic_symbols(path)
    in_namespaces = sorted(name for name, _, _ in symbols if IN_TORCH_NAMESPACE.match(name))
    assert not in_namespaces, f"{os.path.basename(path)} imports torch C++ symbols: {in_namespaces}"
    other = sorted(f"{name}@{version}" if version else name for name, version, kind in symbols
                   if not is_allowed(name, version, kind, cuda=path == CUDA))
    assert not other, f"{os.path.basename(path)} imports symbols outside the stable C shims and the runtimes: {other}"
    # It registers its kernels through the versioned shim (2.10 on); it is not an empty library.
    assert "torch_library_impl" in {name for name, _, _ in symbols}


def test_the_checks_recognise_what_they_must_refuse():
    # The patterns above, on symbols a non-stable build imports (at::Tensor, c10::Error, torch::Library, a
    # std::vector of c10::IValue); and on what they let through.
    refused = (
        "_ZNK2at10TensorBase4sizeEl",
        "_ZN3c105ErrorC1ENS_14SourceLocationENSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE",
        "_ZN5torch7LibraryC1ENS0_4KindENSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEESt8optionalIN3c10"
        "11DispatchKeyEEPKcj",
        "_ZNSt6vectorIN3c106IValueESaIS1_EE17_M_realloc_insertIJRKS1_EEEvN9__gnu_cxx17__normal_iteratorIPS1_S3_EEDpOT_",
        "PyLong_FromLong", "_ZN3sgg5checkEv", "cudaGetLastError")
    for name in refused:
        assert not is_allowed(name, "", "U", cuda=False), name
    assert IN_TORCH_NAMESPACE.match("_ZNK3c1010TensorImpl5sizesEv")
    allowed = (("aoti_torch_get_sizes", ""), ("torch_parallel_for", ""), ("memcpy", "GLIBC_2.14"),
               ("_ZSt28__throw_bad_array_new_lengthv", ""), ("_ZNKSt5ctypeIcE13_M_widen_initEv", "GLIBCXX_3.4.11"),
               ("_ZNKRSt7__cxx1115basic_stringbufIcSt11char_traitsIcESaIcEE3strEv", ""))
    for name, version in allowed:
        assert is_allowed(name, version, "U", cuda=False), name
    assert is_allowed("cudaGetLastError", "libcudart.so.13", "U", cuda=True)
    assert is_allowed("_ZN3sgg19check_guidance_argsEPKcPKN5torch6stable6TensorE", "", "U", cuda=True)


@pytest.mark.parametrize("path", LIBRARIES)
def test_every_shim_the_libraries_import_is_exported_by_this_torch(path):
    # The binary was compiled against the torch in its build record; here every shim it calls must be
    # found in the running torch's libraries (a CUDA library only matters for a CUDA build of torch).
    if path == CUDA and torch.version.cuda is None:
        pytest.skip(f"torch {torch.__version__} is a CPU build: the CUDA library is not loaded")
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    names = ["libtorch_cpu.so", "libc10.so"] + (["libtorch_cuda.so"] if path == CUDA else [])
    libtorch = [ctypes.CDLL(os.path.join(lib_dir, name)) for name in names]
    shims = sorted({name for name, _, _ in dynamic_symbols(path) if name.startswith(STABLE_SHIM)})
    missing = [name for name in shims if not any(hasattr(lib, name) for lib in libtorch)]
    assert not missing, f"torch {torch.__version__} does not export {missing} (built with {_library.build_info()})"


@NOT_BUILT
def test_the_cuda_library_needs_no_python_and_finds_the_core_library_next_to_it():
    dynamic = subprocess.run(["readelf", "-d", CUDA], capture_output=True, text=True, check=True, timeout=60).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
    assert "_C.abi3.so" in needed and any(lib.startswith("libtorch") for lib in needed), needed
    assert not [lib for lib in needed if "python" in lib], needed
    assert re.search(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[\$ORIGIN\]", dynamic), dynamic
    # Every sgg symbol it calls (checks, the backend setting) is one the core library exports: dlopen would
    # fail on it otherwise, which a CPU-only torch never tries.
    core = {name for name, _, _ in dynamic_symbols(CORE, "--defined-only")}
    wanted = sorted(name for name, _, _ in dynamic_symbols(CUDA) if SGG.match(name))
    missing = [name for name in wanted if name not in core]
    assert not missing, f"the CUDA library imports sgg symbols that the core library does not export: {missing}"


LOAD_WITH_TORCH_VERSION = """
import sys, torch
torch.__version__ = {version!r}  # as a release of that version reports itself
try:
    import sgg_kernels
except ImportError as e:
    print("refused:", e)
else:
    c, u = torch.randn(2, 5), torch.randn(2, 5)
    assert torch.allclose(torch.ops.sgg.guide(c, u, None, torch.tensor([1.5, 0.0])), c + 1.5 * (c - u), atol=1e-6)
    print("loaded")
print("mapped" if any({library!r} in line for line in open("/proc/self/maps")) else "not mapped")
"""


def load_with_torch_version(version, tmp_path):
    """The output of a fresh interpreter that imports sgg_kernels with torch.__version__ set to `version`."""
    script = textwrap.dedent(LOAD_WITH_TORCH_VERSION.format(version=version, library=os.path.realpath(CORE)))
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(sgg_kernels.__file__)))
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": package_root}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_torch_below_the_floor_is_refused_before_the_library_is_opened(tmp_path):
    assert _library.build_info()["floor"] == "2.10"
    out = load_with_torch_version("2.9.1", tmp_path)  # 2.9 < 2.10 as versions, not as strings
    assert out.startswith("refused:") and out.rstrip().endswith("not mapped"), out
    assert "needs torch 2.10 or newer" in out and "torch 2.9.1 is installed" in out, out
    assert "pip install 'torch>=2.10'" in out, out


@pytest.mark.parametrize("version", ["2.10.0", "2.99.0+cu999", "3.0.0"])
def test_the_floor_and_any_newer_torch_load_the_same_library(version, tmp_path):
    out = load_with_torch_version(version, tmp_path)
    assert out.split() == ["loaded", "mapped"], out


@pytest.mark.parametrize("built,running,loaded,warned", [
    ("13.0", "13.2", True, False),   # the same CUDA major version: libcudart.so.13 is there
    ("13.0", "12.8", False, True),   # another one: warned, GPU calls run Triton
    ("13.0", None, False, False),    # a CPU build of torch: the core library alone, silently
])
def test_the_cuda_library_loads_only_with_the_cuda_major_version_it_was_built_for(monkeypatch, built, running, loaded,
                                                                                    warned):
    monkeypatch.setattr(_library, "cuda_library_path", lambda: "/built/_C_cuda.abi3.so")
    monkeypatch.setattr(_library, "build_info", lambda: {"torch": "2.14.1", "floor": "2.10", "cuda": built})
    monkeypatch.setattr(torch.version, "cuda", running)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = _library.library_paths()
    assert paths == ([CORE, "/built/_C_cuda.abi3.so"] if loaded else [CORE])
    messages = [str(w.message) for w in caught if "sgg_kernels" in str(w.message)]
    if warned:
        assert len(messages) == 1 and f"CUDA {built}" in messages[0] and f"CUDA {running}" in messages[0], messages
        assert "Triton" in messages[0], messages
    else:
        assert not messages, messages
