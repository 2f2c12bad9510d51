"""Operand factories and the dtype-tied error bound shared by the op tests."""
from __future__ import annotations

import contextlib

import pytest
import torch

from sgg_kernels.reference import guided_step_reference, per_sample

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
LAYOUTS = ("contiguous", "chunk", "transpose", "slice", "channels_last")


def make(shape, dtype, layout="contiguous", gen=None):
    """A random tensor of logical `shape` whose memory has the given layout."""
    g = gen or torch.Generator().manual_seed(0)
    if layout == "chunk":  # one half of a batched cond/uncond forward: contiguous, offset storage
        return torch.randn((2 * shape[0], *shape[1:]), generator=g, dtype=torch.float64).to(dtype).chunk(2)[1]
    if layout == "transpose" and len(shape) >= 3:
        return torch.randn((shape[0], shape[2], shape[1], *shape[3:]), generator=g,
                           dtype=torch.float64).to(dtype).transpose(1, 2)
    if layout == "slice":
        big = torch.randn((shape[0], *[s * 2 + 1 for s in shape[1:]]), generator=g, dtype=torch.float64).to(dtype)
        return big[(slice(None), *[slice(1, None, 2)] * (len(shape) - 1))][tuple(slice(0, s) for s in shape)]
    if layout == "channels_last" and len(shape) == 4:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).contiguous(
            memory_format=torch.channels_last)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def coefficients(batch, per_sample, gen, low=0.0, high=4.0):
    shape = (batch, 2) if per_sample else (2,)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low).float()


def magnitude(x, cond, uncond, weak, weights, step, noise=None):
    """The reference formula on absolute values, with every subtraction made an addition."""
    f64, nd = torch.float64, cond.dim()
    c = cond.double().abs()
    m = c
    if uncond is not None:
        m = m + per_sample(weights.abs(), 0, nd, f64) * (c + uncond.double().abs())
    if weak is not None:
        m = m + per_sample(weights.abs(), 1, nd, f64) * (c + weak.double().abs())
    if step is not None:
        m = per_sample(step.abs(), 0, nd, f64) * x.double().abs() + per_sample(step.abs(), 1, nd, f64) * m
    if noise is not None:
        m = m + per_sample(step.abs(), 2, nd, f64) * noise.double().abs()
    return m


def assert_matches_reference(out, x, cond, uncond, weak, weights, step, ulps=1.0, noise=None):
    """out must equal the float64 reference within a few roundings in the accumulation dtype on the
    magnitudes involved, plus `ulps` roundings to out's dtype."""
    exact = guided_step_reference(x, cond, uncond, weak, weights, step, noise=noise)
    acc_eps = torch.finfo(torch.float64 if out.dtype == torch.float64 else torch.float32).eps
    bound = 8 * acc_eps * magnitude(x, cond, uncond, weak, weights, step, noise) + \
        ulps * torch.finfo(out.dtype).eps * exact.abs() + torch.finfo(out.dtype).tiny
    err = (out.double() - exact).abs()
    assert out.shape == exact.shape and out.dtype == cond.dtype
    worst = (err - bound).max().item() if err.numel() else 0.0
    assert bool((err <= bound).all()), f"max error {err.max().item():.3g} exceeds bound by {worst:.3g}"


@contextlib.contextmanager
def simd_build(name):
    """Runs the block with the CPU SIMD build `name` selected, then restores the previous one; skips the
    test where this processor lacks it."""
    previous = torch.ops.sgg._cpu_capability()
    try:
        torch.ops.sgg._set_cpu_capability(name)
    except RuntimeError:
        pytest.skip(f"this CPU lacks {name}")
    try:
        yield
    finally:
        torch.ops.sgg._set_cpu_capability(previous)


def available_capabilities():
    """The CPU SIMD builds this processor runs (sgg._set_cpu_capability refuses the others)."""
    previous, found = torch.ops.sgg._cpu_capability(), []
    try:
        for name in ("default", "avx2", "avx512"):
            try:
                torch.ops.sgg._set_cpu_capability(name)
                found.append(name)
            except RuntimeError:
                pass
    finally:
        torch.ops.sgg._set_cpu_capability(previous)
    return found
