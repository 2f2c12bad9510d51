"""Operands, layouts and tolerances shared by the backend tests (Triton interpreter, GPU).

Every case is checked against sgg_kernels.reference in float64.
"""
from __future__ import annotations

import math

import torch

from sgg_kernels.reference import guided_step_reference

# Odd sizes, batch 1, empty (batch and inner), 1-D, 4-D and 5-D latents.
SHAPES = [(2, 3, 5, 7), (1, 17), (3, 1), (0, 4), (2, 0, 3), (5,), (2, 4, 8, 8), (2, 3, 4, 5, 6)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# Which optional operands are present: (uncond, weak).
OPERANDS = [(True, True), (True, False), (False, True), (False, False)]


def make_operands(shape, dtype, device, layout="contiguous", seed=0):
    """(x, cond, uncond, weak) of logical shape `shape` in one of these layouts:

    contiguous; chunk (the halves of a batched [2B, ...] forward, as cond/uncond come out of a CFG
    batch); transpose (last two dims swapped in memory); slice (every other element of a wider tensor);
    mixed (each operand a different layout, so no two share strides).
    """
    g = torch.Generator().manual_seed(seed)

    def rand(s):
        return torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(device)

    def view(kind):
        if kind == "contiguous":
            return rand(shape)
        if kind == "transpose" and len(shape) >= 2:
            return rand(shape[:-2] + shape[-2:][::-1]).transpose(-1, -2)
        if kind == "slice":
            return rand(shape[:-1] + (2 * shape[-1] + 1,))[..., 1::2]
        if kind == "chunk":
            return rand((2 * shape[0],) + tuple(shape[1:])).chunk(2)[1] if shape[0] else rand(shape)
        return rand(shape)  # transpose of a 1-D shape: contiguous

    kinds = {"mixed": ["slice", "transpose", "contiguous", "chunk"]}.get(layout, [layout] * 4)
    x, cond, uncond, weak = (view(k) for k in kinds)
    if layout == "chunk" and shape[0]:
        cond, uncond = rand((2 * shape[0],) + tuple(shape[1:])).chunk(2)
    return x, cond, uncond, weak


def make_coefficients(batch, per_sample, device, seed=1):
    """weights (lam_cdg, lam_cag) and step (a, b): [B, 2] per sample, or one shared [2] row."""
    g = torch.Generator().manual_seed(seed)
    rows = batch if per_sample else 1
    weights = (torch.rand(rows, 2, generator=g) * 6).to(device)
    step = torch.stack([torch.ones(rows), -torch.rand(rows, generator=g) * 0.1], 1).to(device)
    return (weights, step) if per_sample else (weights[0].contiguous(), step[0].contiguous())


def assert_matches_reference(out, x, cond, uncond, weak, weights, step, bf16_ulps=0.5):
    """out within the dtype's rounding of the float64 reference (plus float32 arithmetic error).

    bf16_ulps: allowed bf16 error in ulps of the reference; the Triton interpreter truncates instead
    of rounding to nearest, so its tests pass 1.
    """
    ref = guided_step_reference(x, cond, uncond, weak, weights, step)
    assert out.dtype == (cond.dtype if x is None else x.dtype) and out.shape == ref.shape
    if out.numel() == 0:
        return
    got, ref = out.detach().double().cpu(), ref.cpu()
    # Float32 arithmetic error scales with the largest term, not the (possibly cancelled) result.
    scale = max(float(t.detach().abs().max()) for t in (x, cond, uncond, weak) if t is not None)
    scale *= 1 + float(weights.abs().max()) * 2
    if step is not None:
        scale *= float(step.abs().max())
    compute = 1e-15 if cond.dtype == torch.float64 else 4e-7
    ulps = {torch.float16: 0.5, torch.bfloat16: bf16_ulps}.get(cond.dtype, 0.0)
    mantissa = {torch.float16: 10, torch.bfloat16: 7}.get(cond.dtype, 52)
    ulp = torch.exp2(torch.floor(torch.log2(ref.abs().clamp_min(1e-30))) - mantissa)
    allowed = ulps * ulp * (1 + 1e-6) + compute * scale * 8
    err = (got - ref).abs()
    worst = int(torch.argmax(err - allowed))
    assert bool((err <= allowed).all()), (
        f"{cond.dtype} {tuple(cond.shape)}: |out - ref| = {float(err.flatten()[worst]):.3g} > "
        f"{float(allowed.flatten()[worst]):.3g} at flat index {worst} (ref {float(ref.flatten()[worst]):.6g})")
    assert not math.isnan(float(err.max()))
