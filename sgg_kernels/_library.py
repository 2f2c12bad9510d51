"""Finds and loads the sgg operator library, which defines every `torch.ops.sgg` op.

The library (sgg_kernels/_C.abi3.so) links libtorch only, so other processes can load it without
this package: `torch.ops.load_library(sgg_kernels.library_path())` in Python, or dlopen/linking in C++.
"""
from __future__ import annotations

import json
import os

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


def build_info() -> dict:
    """What the library was built against: {'torch': version, 'cuda': whether its CUDA kernels were compiled}."""
    with open(os.path.join(_HERE, "_build_info.json")) as f:
        return json.load(f)


def load() -> None:
    """Loads the library once; a library built against another torch is refused before it is opened
    (its C++ symbols would not resolve, or worse, resolve to an incompatible ABI)."""
    path = library_path()
    try:
        built_for = build_info()["torch"]
    except (OSError, ValueError, KeyError) as e:
        raise ImportError(f"sgg_kernels: {path} has no readable build record ({e}); rebuild with: {_BUILD}") from e
    if built_for != torch.__version__:
        raise ImportError(f"sgg_kernels: the operator library was built against torch {built_for}, but torch "
                          f"{torch.__version__} is installed; rebuild it with: {_BUILD}")
    try:
        torch.ops.load_library(path)
    except OSError as e:
        raise ImportError(f"sgg_kernels: could not load {path} ({e}); rebuild it with: {_BUILD}") from e
