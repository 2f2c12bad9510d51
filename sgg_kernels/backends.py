"""Which implementation runs the sgg ops.

CPU tensors run the compiled C++ kernels. CUDA tensors run the selected GPU backend:

- ``cuda``: the CUDA C++ kernels of the operator library (default when it was built with CUDA);
- ``triton``: the Triton kernels (default otherwise);
- ``torch``: the pure-PyTorch reference path, for debugging and comparison.

Select one with the environment variable ``SGG_BACKEND`` or with :func:`set_backend`. The choice lives
in the C++ library, whose CUDA kernels check every call and then run the CUDA C++ kernel or hand the
call to the Python backend through the internal op ``sgg::_python_gpu_guided_step``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
from typing import Callable, Iterator, Optional

import torch

from .reference import launch_torch

BACKENDS = ("cuda", "triton", "torch")
ENV_VAR = "SGG_BACKEND"

_selected: Optional[str] = None  # set_backend's choice, mirrored in the library (use_backend restores it)


def cuda_built() -> bool:
    """Whether the operator library was compiled with its CUDA kernels."""
    return torch.ops.sgg._cuda_built()


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _why_unavailable(name: str) -> Optional[str]:
    if name == "cuda" and not cuda_built():
        if torch.version.cuda is None:
            return f"torch {torch.__version__} is not a CUDA build, so the library was built CPU-only"
        return ("the library was built without CUDA (setup.py found no nvcc); set CUDA_HOME to the CUDA toolkit "
                "and rebuild: pip install --no-build-isolation .")
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
    torch.ops.sgg._set_gpu_backend(name)
    _selected = name


def get_backend() -> str:
    """The GPU backend that CUDA tensors run: set_backend's, else $SGG_BACKEND, else cuda if built, else triton."""
    return torch.ops.sgg._gpu_backend()


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
    """The launcher of one backend, f(out, x, cond, uncond, weak, weights, step, noise=None), which writes
    into out.

    'cpu' is the compiled CPU kernel. Launchers do not validate; the ops do (csrc/checks.cpp).
    """
    if name == "torch":
        return launch_torch
    if name not in ("cpu", *BACKENDS):
        raise ValueError(f"unknown sgg backend {name!r}; expected cpu or one of {', '.join(BACKENDS)}")
    why = _why_unavailable(name)
    if why:
        raise RuntimeError(f"sgg backend {name!r} is not available: {why}")
    if name == "triton":
        from .triton_kernels import launch_triton
        return launch_triton
    return functools.partial(torch.ops.sgg._launch, name)


# The CUDA kernels of the library hand calls to this when the selected backend is triton or torch.
def _python_gpu_guided_step(out, x, cond, uncond, weak, weights, step, noise) -> None:
    launcher(get_backend())(out, x, cond, uncond, weak, weights, step, noise)


_lib = torch.library.Library("sgg", "IMPL")
_lib.impl("_python_gpu_guided_step", _python_gpu_guided_step, "CUDA")
