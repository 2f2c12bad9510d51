"""Which implementation runs the sgg ops.

CPU tensors always run the compiled C++ kernel (or, if the extension is not built, the pure-PyTorch
path, announced once by a warning). CUDA tensors run the selected GPU backend:

- ``cuda``: the CUDA C++ kernels of the extension (default when the extension was built with CUDA);
- ``triton``: the Triton kernels (default otherwise);
- ``torch``: the pure-PyTorch path, for debugging and comparison.

Select one with the environment variable ``SGG_BACKEND`` or with :func:`set_backend`.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from typing import Callable, Iterator, Optional

import torch

from .reference import launch_torch

BACKENDS = ("cuda", "triton", "torch")
ENV_VAR = "SGG_BACKEND"

try:
    from . import _C
except ImportError as e:  # a source checkout without `pip install -e .`
    _C = None
    _C_ERROR = str(e)

_selected: Optional[str] = None
_warned_fallback = False


def extension_built() -> bool:
    return _C is not None


def cuda_built() -> bool:
    return _C is not None and hasattr(_C, "guided_step_cuda")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _why_unavailable(name: str) -> Optional[str]:
    if name == "cuda" and not cuda_built():
        if _C is None:
            return f"the sgg C++ extension is not built ({_C_ERROR}); run `pip install --no-build-isolation -e .`"
        if torch.version.cuda is None:
            return f"torch {torch.__version__} is not a CUDA build, so the extension was built CPU-only"
        return ("the extension was built without CUDA (setup.py found no nvcc); set CUDA_HOME to the CUDA "
                "toolkit and rebuild: `python setup.py build_ext --inplace`")
    if name == "triton" and not triton_available():
        return "triton is not installed; `pip install triton`"
    return None


def set_backend(name: Optional[str]) -> None:
    """Selects the GPU backend ('cuda', 'triton' or 'torch'); None restores the default."""
    global _selected
    if name is not None:
        if name not in BACKENDS:
            raise ValueError(f"unknown sgg backend {name!r}; expected one of {', '.join(BACKENDS)}")
        why = _why_unavailable(name)
        if why:
            raise RuntimeError(f"sgg backend {name!r} is not available: {why}")
    _selected = name


def get_backend() -> str:
    """The GPU backend that CUDA tensors run: set_backend's, else $SGG_BACKEND, else the best available."""
    if _selected is not None:
        return _selected
    env = os.environ.get(ENV_VAR)
    if env:
        if env not in BACKENDS:
            raise ValueError(f"{ENV_VAR}={env!r} is not a backend; expected one of {', '.join(BACKENDS)}")
        return env
    for name in ("cuda", "triton"):
        if _why_unavailable(name) is None:
            return name
    raise RuntimeError("no GPU backend for sgg ops: build the extension with CUDA or install triton, "
                       f"or set {ENV_VAR}=torch to run the slow pure-PyTorch path")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Temporarily selects a GPU backend."""
    previous = _selected
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def launcher(name: str) -> Callable:
    """The launcher of one backend: f(out, x, cond, uncond, weak, weights, step) writes into out.

    'cpu' is the compiled CPU kernel. Launchers do not validate; the ops do (sgg_kernels._checks).
    """
    if name == "torch":
        return launch_torch
    if name == "cpu":
        if _C is None:
            raise RuntimeError(f"the sgg C++ extension is not built ({_C_ERROR}); run `pip install --no-build-isolation -e .`")
        return _C.guided_step_cpu
    why = _why_unavailable(name)
    if why:
        raise RuntimeError(f"sgg backend {name!r} is not available: {why}")
    if name == "cuda":
        return _C.guided_step_cuda
    if name == "triton":
        from .triton_kernels import launch_triton
        return launch_triton
    raise ValueError(f"unknown sgg backend {name!r}; expected cpu or one of {', '.join(BACKENDS)}")


def cpu_launcher() -> Callable:
    global _warned_fallback
    if _C is not None:
        return _C.guided_step_cpu
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(f"sgg_kernels: the C++ extension is not built ({_C_ERROR}); CPU ops run the slow "
                      "pure-PyTorch path. Build it with `pip install --no-build-isolation -e .`", stacklevel=3)
    return launch_torch


def device_launcher(device_type: str) -> Callable:
    return cpu_launcher() if device_type == "cpu" else launcher(get_backend())
