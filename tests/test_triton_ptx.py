"""The Triton kernels compile for Hopper (sm_90) without a GPU, and the dense path moves 16 bytes
per access. triton.compile is given the arguments the launcher passes, captured at launch time."""
import os
import re
from collections import Counter

import pytest
import torch

from test_ops import operands

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("the interpreter replaces the compiler (run without TRITON_INTERPRET)", allow_module_level=True)
try:  # compiler internals (triton 3.x); if they move, this offline check is skipped, not wrong
    from triton.backends import backends as triton_backends
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import create_function_from_signature
except ImportError as e:
    pytest.skip(f"triton {triton.__version__} compiler internals moved: {e}", allow_module_level=True)

import sgg_kernels.triton_kernels as tk  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)


def compile_ptx(monkeypatch, out, x, cond, uncond, weak, weights, step) -> str:
    """PTX of the kernel that launch_triton would launch for these tensors (they may live on the CPU)."""
    kernel, backend, compiled = tk._guided_step_kernel, triton_backends["nvidia"].compiler(HOPPER), []

    class Capture:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                bound, specialization, options = create_function_from_signature(
                    kernel.signature, kernel.params, backend)(*args, **kwargs)
                options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization,
                                                                          options)
                src = ASTSource(kernel, signature, constexprs, attrs)
                compiled.append(triton.compile(src, target=HOPPER, options=options.__dict__))
            return run

    monkeypatch.setattr(tk, "_guided_step_kernel", Capture())
    tk.launch_triton(out, x, cond, uncond, weak, weights, step)
    assert len(compiled) == 1
    return compiled[0].asm["ptx"]


def global_accesses(ptx: str) -> Counter:
    return Counter(re.findall(r"\b(ld|st)\.global(?:\.\w+)*?\.(v4\.b32|v2\.b64|b16|b32|b64)\b", ptx))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", ["guide", "guided_step"])
def test_dense_path_uses_16_byte_accesses(monkeypatch, dtype, op):
    x, cond, uncond, weak, weights, step = operands((2, 16, 32, 32), dtype, "chunk", True, True, True)
    if op == "guide":
        x, step = None, None
    ptx = compile_ptx(monkeypatch, torch.empty_like(cond), x, cond, uncond, weak, weights, step)
    accesses = global_accesses(ptx)
    wide = "v2.b64" if dtype == torch.float64 else "v4.b32"
    present = 3 if x is None else 4
    assert accesses[("ld", wide)] >= present, accesses
    assert accesses[("st", wide)] >= 1 and not any(k[0] == "st" and k[1] != wide for k in accesses), accesses


def test_strided_path_compiles(monkeypatch):
    x, cond, uncond, weak, weights, step = operands((2, 4, 6, 5), torch.float16, "slice", True, True, False)
    ptx = compile_ptx(monkeypatch, torch.empty(x.shape, dtype=x.dtype), x, cond, uncond, weak, weights, step)
    assert global_accesses(ptx)[("st", "b16")] >= 1
