"""Finds and loads the sgg operator libraries, which define every `torch.ops.sgg` op.

The core library (sgg_kernels/_C.abi3.so: schemas, checks, CPU kernels) and the CUDA library
(_C_cuda.abi3.so, when built) use LibTorch's stable ABI only, so one build loads on every torch from
its floor on, and other processes can load them without this package:
`torch.ops.load_library(path)` for each of `library_paths()` in Python, or dlopen in C++.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
_BUILD = "pip install --no-build-isolation .  (or `make build` in a source checkout)"


def library_path() -> str:
    """The path of the compiled operator library."""
    path = os.path.join(_HERE, "_C.abi3.so")
    if os.path.exists(path):
        return path
    root = os.path.dirname(_HERE)
    if os.path.exists(os.path.join(root, "setup.py")):
        # Python puts the current directory first on sys.path, so from a clone's root `import sgg_kernels`
        # finds the sources even when a built copy is installed.
        raise ImportError(
            f"sgg_kernels: this is the unbuilt source tree in {root} ({path} is missing), imported instead of an "
            f"installed copy because it comes first on sys.path (e.g. the current directory). Either build it in "
            f"place: `make build` or `python setup.py build_ext --inplace` in {root}; or run from another "
            f"directory, so that Python imports the installed package.")
    raise ImportError(f"sgg_kernels: the operator library is not built ({path} is missing); build it with: {_BUILD}")


def cuda_library_path() -> str | None:
    """The path of the CUDA library, or None where it was not built (CPU-only builds)."""
    path = os.path.join(_HERE, "_C_cuda.abi3.so")
    return path if os.path.exists(path) else None


def library_paths() -> list[str]:
    """What a process loads, in order: the core library, then the CUDA library where this torch can load
    it (a CUDA build of torch with the CUDA major version it was compiled for)."""
    paths = [library_path()]
    cuda = cuda_library_path()
    if cuda and _cuda_library_fits():
        paths.append(cuda)
    return paths


def build_info() -> dict:
    """What the libraries were built with: {'torch': the torch whose headers compiled them, 'floor': the
    oldest torch they load on, 'cuda': the CUDA version of the CUDA library, or None}."""
    with open(os.path.join(_HERE, "_build_info.json")) as f:
        return json.load(f)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:2])


def _cuda_library_fits() -> bool:
    """The CUDA library needs the CUDA runtime major version it was compiled with (libcudart.so.N)."""
    built = build_info().get("cuda")
    if torch.version.cuda is None:
        return False  # a CPU-only torch: the core library serves it, with no CUDA kernels to offer
    if built and _version(built)[0] == _version(torch.version.cuda)[0]:
        return True
    warnings.warn(f"sgg_kernels: the CUDA kernels were compiled for CUDA {built}, and this torch uses CUDA "
                  f"{torch.version.cuda}; GPU calls run the Triton backend. Rebuild for this CUDA with: {_BUILD}",
                  stacklevel=3)
    return False


def load() -> None:
    """Loads the libraries once. A torch below the stable-ABI floor is refused before anything is opened
    (the libraries call C shims it lacks); any newer torch loads the same binaries."""
    path = library_path()
    try:
        info = build_info()
        floor = info["floor"]
    except (OSError, ValueError, KeyError) as e:
        raise ImportError(f"sgg_kernels: {path} has no readable build record ({e}); rebuild with: {_BUILD}") from e
    if _version(torch.__version__) < _version(floor):
        raise ImportError(f"sgg_kernels: the operator library needs torch {floor} or newer (its stable-ABI floor; "
                          f"built with torch {info['torch']}), but torch {torch.__version__} is installed; upgrade "
                          f"torch, e.g. pip install 'torch>={floor}'")
    for lib in library_paths():
        try:
            torch.ops.load_library(lib)
        except OSError as e:
            raise ImportError(f"sgg_kernels: could not load {lib} ({e}); rebuild it with: {_BUILD}") from e


@contextlib.contextmanager
def replacing_library_autograd():
    """For registering the Python autograd kernels over the library's own (which, where this package is
    not imported, refuse calls that need a graph: csrc/library_only_autograd.cpp). Some torch releases
    (2.13) warn at this expected replacement, "Overriding a previously registered kernel", once per
    process; only that warning, for sgg ops, is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*Overriding a previously registered kernel.*operator: sgg::")
        yield
