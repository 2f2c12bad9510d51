"""The Triton kernels compile for Hopper (sm_90) without a GPU: the dense path moves 16 bytes per
access, the w2s_loss kernels fit in few registers (ptxas -v) and fuse no multiply-adds, and its grid
stays inside CUDA's limits at any size. triton.compile is given the arguments the launcher passes,
captured at launch time."""
import os
import re
import subprocess
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
import sgg_kernels.triton_w2s_loss as tw  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
# At most 96 registers per thread: 5 or more 4-warp programs per SM (65536 registers). The previous
# BLOCK = 4096 used 168-255 with a stack in float64.
REGISTER_LIMIT = 96


class Capture:
    """Stands in for a kernel: records (grid, compiled kernel or None) instead of launching."""

    def __init__(self, kernel, compiled, compile_it=True):
        self.kernel, self.compiled, self.compile_it = kernel, compiled, compile_it

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            if not self.compile_it:
                self.compiled.append((grid, None))
                return
            kernel, backend = self.kernel, triton_backends["nvidia"].compiler(HOPPER)
            bound, specialization, options = create_function_from_signature(
                kernel.signature, kernel.params, backend)(*args, **kwargs)
            options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
            src = ASTSource(kernel, signature, constexprs, attrs)
            self.compiled.append((grid, triton.compile(src, target=HOPPER, options=options.__dict__)))
        return run


def capture(monkeypatch, module, names, launch, compile_it=True) -> list:
    """[(grid, compiled)] of the kernels `names` of `module` that launch() would launch (on CPU tensors)."""
    compiled = []
    for name in names:
        monkeypatch.setattr(module, name, Capture(getattr(module, name), compiled, compile_it))
    launch()
    return compiled


def compile_ptx(monkeypatch, out, x, cond, uncond, weak, weights, step, noise=None) -> str:
    """PTX of the kernel that launch_triton would launch for these tensors (they may live on the CPU)."""
    compiled = capture(monkeypatch, tk, ["_guided_step_kernel"],
                       lambda: tk.launch_triton(out, x, cond, uncond, weak, weights, step, noise))
    assert len(compiled) == 1
    return compiled[0][1].asm["ptx"]


def ptxas_usage(ptx: str, tmp_path) -> tuple:
    """(registers, spill and stack bytes) that ptxas -v reports for sm_90a."""
    source = tmp_path / "kernel.ptx"
    source.write_text(ptx)
    run = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", str(source), "-o", str(tmp_path / "kernel.cubin")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    registers = int(re.search(r"Used (\d+) registers", run.stderr).group(1))
    spilled = sum(int(n) for n in re.findall(r"(\d+) bytes (?:spill stores|spill loads|stack frame)", run.stderr))
    return registers, spilled


def global_accesses(ptx: str) -> Counter:
    return Counter(re.findall(r"\b(ld|st)\.global(?:\.\w+)*?\.(v4\.b32|v2\.b64|b16|b32|b64)\b", ptx))


def wide_accesses(ptx: str, dtype) -> tuple:
    """(16-byte loads, 16-byte stores) per thread in the PTX."""
    wide = "v2.b64" if dtype == torch.float64 else "v4.b32"
    accesses = global_accesses(ptx)
    return accesses[("ld", wide)], accesses[("st", wide)]


# Per thread, each operand of a full block is _BYTES_PER_THREAD = 32 bytes: two 16-byte accesses.
# (3, 5, 37, 41) has 7585 elements per sample and 113775 in all, neither a multiple of 16: before the
# flat layout's unmasked full blocks its PTX had only 2-byte loads in bf16 (issue 26, item 7). The
# stochastic step's noise is one more operand with its own vectors, its term no more fused than the rest.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", ["guide", "guided_step", "stochastic_step"])
@pytest.mark.parametrize("shape", [(2, 16, 32, 32), (3, 5, 37, 41), (1, 4, 127, 127)], ids=str)
@pytest.mark.parametrize("per_sample", [True, False])
def test_dense_path_uses_16_byte_accesses(monkeypatch, dtype, op, shape, per_sample):
    x, cond, uncond, weak, weights, step = operands(shape, dtype, "contiguous", True, True, per_sample)
    noise = None
    if op == "guide":
        x, step = None, None
    elif op == "stochastic_step":
        noise, step = torch.randn_like(cond), torch.rand(*step.shape[:-1], 3)
    ptx = compile_ptx(monkeypatch, torch.empty_like(cond), x, cond, uncond, weak, weights, step, noise)
    present = sum(t is not None for t in (x, cond, uncond, weak, noise))
    assert wide_accesses(ptx, dtype) == (2 * present, 2), global_accesses(ptx)
    assert not re.search(r"\bfma\.", ptx), "a fused multiply-add: the CPU kernel rounds the product first"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_chunk_halves_keep_vectors_for_the_aligned_operands(monkeypatch, dtype):
    # cond and uncond are the halves of one [2, 4, 127, 127] batch: uncond starts 64516 elements in,
    # which is 16-byte aligned in float32 and not in bf16, where only uncond falls back to 2-byte loads.
    cond, uncond = torch.randn(2, 4, 127, 127).to(dtype).chunk(2)
    x, weak = torch.randn_like(cond), torch.randn_like(cond)
    ptx = compile_ptx(monkeypatch, torch.empty_like(cond), x, cond, uncond, weak, torch.rand(2), torch.rand(2))
    aligned = 4 if uncond.data_ptr() % 16 == 0 else 3
    assert aligned == (4 if dtype == torch.float32 else 3)
    assert wide_accesses(ptx, dtype) == (2 * aligned, 2), global_accesses(ptx)


@pytest.mark.parametrize("stochastic", [False, True])
def test_strided_path_compiles(monkeypatch, stochastic):
    x, cond, uncond, weak, weights, step = operands((2, 4, 6, 5), torch.float16, "slice", True, True, False)
    noise, step = (torch.randn_like(x), torch.rand(3)) if stochastic else (None, step)
    ptx = compile_ptx(monkeypatch, torch.empty(x.shape, dtype=x.dtype), x, cond, uncond, weak, weights, step, noise)
    assert global_accesses(ptx)[("st", "b16")] >= 1


def w2s_launch(dtype, has_weak=True, has_mid=True, shape=(2, 4, 33, 17)):
    g = torch.Generator().manual_seed(0)
    v, u, weak, mid = (torch.randn(shape, generator=g).to(dtype) for _ in range(4))
    weak, mid = (weak if has_weak else None), (mid if has_mid else None)
    coefs = torch.rand(shape[0], 3, generator=g)
    loss = torch.empty(shape[0], dtype=torch.float64 if dtype == torch.float64 else torch.float32)

    def launch():
        tw.forward_triton(loss, v, u, weak, mid, coefs)
        tw.backward_triton(torch.empty_like(v), None if mid is None else torch.empty_like(v), torch.ones_like(loss),
                           v, u, weak, mid, coefs)
    return launch


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_w2s_kernels_fit_in_few_registers_and_fuse_no_multiply_adds(monkeypatch, tmp_path, dtype):
    kernels = capture(monkeypatch, tw, ["_w2s_forward_kernel", "_w2s_backward_kernel"], w2s_launch(dtype))
    assert len(kernels) == 2
    for _, compiled in kernels:
        ptx = compiled.asm["ptx"]
        assert not re.search(r"\bfma\.", ptx), "a fused multiply-add: the CPU kernel rounds the product first"
        registers, spilled = ptxas_usage(ptx, tmp_path)
        assert registers <= REGISTER_LIMIT and spilled == 0, (compiled.name, registers, spilled)


def test_w2s_grid_stays_within_cuda_launch_limits(monkeypatch):
    # 2**29 elements per sample (more than 65535 * 4096): the chunk count must not be on grid axis 1
    # or 2 (65535 at most); axis 0 takes 2**31 - 1. expand() gives the size without the memory.
    n = 2**29
    v = torch.zeros(1).expand(3, n)
    coefs = torch.zeros(3)
    grids = capture(monkeypatch, tw, ["_w2s_forward_kernel", "_w2s_backward_kernel"], lambda: (
        tw.forward_triton(torch.empty(3), v, v, None, None, coefs),
        tw.backward_triton(v, None, torch.ones(3), v, v, None, None, coefs)), compile_it=False)
    assert len(grids) == 2
    for grid, _ in grids:
        assert len(grid) == 1 and 3 * n <= grid[0] * tw.BLOCK < 3 * n + 3 * tw.BLOCK and grid[0] < 2**31
