"""Triton kernels of the sgg ops: one pass over memory, the launcher of the ``triton`` backend.

    launch_triton(out, x, cond, uncond, weak, weights, step, noise=None)   # writes out (which may be x)

With noise (a stochastic step, whose step is [3] or [B, 3]) out = (s0 * x + s1 * guide) + s2 * noise,
noise being one more operand like x (any layout; it takes part in the layout choice below). Without
it the noise term is compiled out (HAS_NOISE is a compile-time flag): no extra load, the kernel of a
deterministic step unchanged.

Each program handles BLOCK elements of one sample, so the per-sample coefficients are scalar loads
per program. Arithmetic is float32 (float64 for float64 inputs), offsets are 64-bit, and the terms
are added in the order of the reference formula (as csrc/guidance_params.h's guided_value), with no
fused multiply-adds, so the result is the CPU kernel's bit for bit.

Layouts:
- dense (every operand, noise included, has out's strides, covers its memory without gaps, samples
  one after the other, as csrc/params_from_tensors.h), FLAT: blocks over all elements, whatever the
  sample size. Every block but the last is unmasked, so each operand whose address is a multiple of
  16 bytes moves 16-byte vectors (odd shapes such as (3, 5, 37, 41) included); an operand that is
  not (a chunk(2) half after an odd-sized first half) takes element loads, the others keep their
  vectors. A block covers at most two samples, so each per-sample coefficient is two scalar loads
  and a select;
- dense with per-sample coefficients and samples smaller than a block, PER_SAMPLE: blocks within
  each sample, vectors when the sample size is a multiple of 16 elements;
- anything else, STRIDED: the offsets of each operand from its own strides (no copies, so a strided view of
  x is written in place), over up to MAX_INNER_DIMS coalesced dims per sample.

The launcher reads no tensor values and allocates nothing, so it can be captured in a CUDA graph.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

# Inner (per-sample) dims the strided kernel walks; more, after coalescing, are split into launches.
MAX_INNER_DIMS = 4
# Bytes each thread moves per operand and program: two 16-byte vectors, so loads of all operands are
# in flight together before the store.
_BYTES_PER_THREAD = 32
_WARPS = 4
# Layouts (the kernel's LAYOUT): see the module docstring.
FLAT: tl.constexpr = tl.constexpr(0)
PER_SAMPLE: tl.constexpr = tl.constexpr(1)
STRIDED: tl.constexpr = tl.constexpr(2)


@triton.jit
def _load(ptr, offsets, mask, F64: tl.constexpr):
    if mask is None:  # a full block: no mask, so the loads keep their 16-byte vectors
        value = tl.load(ptr + offsets)
    else:
        value = tl.load(ptr + offsets, mask=mask, other=0)
    return value.to(tl.float64) if F64 else value.to(tl.float32)


@triton.jit
def _inner_offsets(idx, s1, s2, s3, s4, d2, d3, d4):
    # idx = ((i1 * d2 + i2) * d3 + i3) * d4 + i4 over the coalesced inner dims (size-1 dims fold away).
    i4 = idx % d4
    rest = idx // d4
    i3 = rest % d3
    rest = rest // d3
    i2 = rest % d2
    i1 = rest // d2
    return i1 * s1 + i2 * s2 + i3 * s3 + i4 * s4


@triton.jit
def _coefficient(ptr, first, second, in_second, stride, column: tl.constexpr):
    """The coefficient of each element: a block covers at most two samples, `first` and `second`
    (in_second is a vector mask in the flat layout, the scalar False otherwise)."""
    value = tl.load(ptr + first * stride + column)
    if second is not None:
        value = tl.where(in_second, tl.load(ptr + second * stride + column), value)
    return value


@triton.jit
def _guide_block(out_ptr, x_ptr, cond_ptr, uncond_ptr, weak_ptr, noise_ptr, weights_ptr, step_ptr,
                 o_off, x_off, c_off, u_off, w_off, n_off, mask, first, second, in_second, weights_stride,
                 step_stride, HAS_X: tl.constexpr, HAS_UNCOND: tl.constexpr, HAS_WEAK: tl.constexpr,
                 HAS_NOISE: tl.constexpr, F64: tl.constexpr):
    c = _load(cond_ptr, c_off, mask, F64)
    g = c
    if HAS_UNCOND:
        w_u = _coefficient(weights_ptr, first, second, in_second, weights_stride, 0)
        g = g + w_u.to(c.dtype) * (c - _load(uncond_ptr, u_off, mask, F64))
    if HAS_WEAK:
        w_w = _coefficient(weights_ptr, first, second, in_second, weights_stride, 1)
        g = g + w_w.to(c.dtype) * (c - _load(weak_ptr, w_off, mask, F64))
    if HAS_X:
        a = _coefficient(step_ptr, first, second, in_second, step_stride, 0).to(c.dtype)
        b = _coefficient(step_ptr, first, second, in_second, step_stride, 1).to(c.dtype)
        g = a * _load(x_ptr, x_off, mask, F64) + b * g
        if HAS_NOISE:  # added last, to the rounded deterministic step: ((s0 x + s1 g) + s2 n)
            s = _coefficient(step_ptr, first, second, in_second, step_stride, 2).to(c.dtype)
            g = g + s * _load(noise_ptr, n_off, mask, F64)
    if mask is None:
        tl.store(out_ptr + o_off, g.to(out_ptr.dtype.element_ty))
    else:
        tl.store(out_ptr + o_off, g.to(out_ptr.dtype.element_ty), mask=mask)


# Sizes and strides are not specialised (each distinct value pattern would be another compile); the
# sample size and the pointers are, so the per-sample dense path learns its 16-byte alignment.
@triton.jit(do_not_specialize=[
    "numel", "last_sample", "blocks_per_sample", "weights_stride", "step_stride", "d2", "d3", "d4",
    "o0", "o1", "o2", "o3", "o4", "x0", "x1", "x2", "x3", "x4", "c0", "c1", "c2", "c3", "c4",
    "u0", "u1", "u2", "u3", "u4", "w0", "w1", "w2", "w3", "w4", "n0", "n1", "n2", "n3", "n4"])
def _guided_step_kernel(
    out_ptr, x_ptr, cond_ptr, uncond_ptr, weak_ptr, noise_ptr, weights_ptr, step_ptr,
    numel, per_sample, last_sample, blocks_per_sample, weights_stride, step_stride,
    d2, d3, d4,
    o0, o1, o2, o3, o4, x0, x1, x2, x3, x4, c0, c1, c2, c3, c4,
    u0, u1, u2, u3, u4, w0, w1, w2, w3, w4, n0, n1, n2, n3, n4,
    HAS_X: tl.constexpr, HAS_UNCOND: tl.constexpr, HAS_WEAK: tl.constexpr, HAS_NOISE: tl.constexpr,
    LAYOUT: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if LAYOUT == FLAT:
        # Blocks over all elements: offsets are multiples of BLOCK whatever the sample size, and only
        # the last block is masked, so every other block moves 16-byte vectors.
        start = pid.to(tl.int64) * BLOCK
        off = start + tl.arange(0, BLOCK)
        first = start // per_sample
        second = tl.minimum(first + 1, last_sample)
        in_second = off >= (first + 1) * per_sample
        if start + BLOCK <= numel:
            _guide_block(out_ptr, x_ptr, cond_ptr, uncond_ptr, weak_ptr, noise_ptr, weights_ptr, step_ptr,
                         off, off, off, off, off, off, None, first, second, in_second, weights_stride,
                         step_stride, HAS_X, HAS_UNCOND, HAS_WEAK, HAS_NOISE, F64)
        else:
            _guide_block(out_ptr, x_ptr, cond_ptr, uncond_ptr, weak_ptr, noise_ptr, weights_ptr, step_ptr,
                         off, off, off, off, off, off, off < numel, first, second, in_second, weights_stride,
                         step_stride, HAS_X, HAS_UNCOND, HAS_WEAK, HAS_NOISE, F64)
    else:
        sample = (pid // blocks_per_sample).to(tl.int64)
        idx = (pid % blocks_per_sample).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        if LAYOUT == PER_SAMPLE:
            off = sample * per_sample + idx
            o_off, x_off, c_off, u_off, w_off, n_off = off, off, off, off, off, off
        else:
            o_off = sample * o0 + _inner_offsets(idx, o1, o2, o3, o4, d2, d3, d4)
            x_off = sample * x0 + _inner_offsets(idx, x1, x2, x3, x4, d2, d3, d4)
            c_off = sample * c0 + _inner_offsets(idx, c1, c2, c3, c4, d2, d3, d4)
            u_off = sample * u0 + _inner_offsets(idx, u1, u2, u3, u4, d2, d3, d4)
            w_off = sample * w0 + _inner_offsets(idx, w1, w2, w3, w4, d2, d3, d4)
            n_off = sample * n0 + _inner_offsets(idx, n1, n2, n3, n4, d2, d3, d4)
        _guide_block(out_ptr, x_ptr, cond_ptr, uncond_ptr, weak_ptr, noise_ptr, weights_ptr, step_ptr,
                     o_off, x_off, c_off, u_off, w_off, n_off, idx < per_sample, sample, None, False,
                     weights_stride, step_stride, HAS_X, HAS_UNCOND, HAS_WEAK, HAS_NOISE, F64)


def _gap_free(t: Tensor) -> bool:
    """ATen's is_non_overlapping_and_dense: some permutation of t's dims is contiguous."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _is_dense(out: Tensor, operands) -> bool:
    """csrc/params_from_tensors.h's fast-path condition: one sample-major, gap-free layout for all."""
    if not (_gap_free(out) and all(t.stride() == out.stride() for t in operands)):
        return False
    return out.shape[0] <= 1 or out.stride(0) * out.shape[0] == out.numel()


def _inner_layout(tensors) -> tuple[list[int], list[list[int]]]:
    """Sizes and per-tensor strides of the per-sample dims, size-1 dims dropped and dims that are
    contiguous in every tensor merged (outermost first)."""
    sizes: list[int] = []
    strides: list[list[int]] = [[] for _ in tensors]
    for d in range(1, tensors[0].dim()):
        size = tensors[0].shape[d]
        if size == 1:
            continue
        if sizes and all(st[-1] == t.stride(d) * size for st, t in zip(strides, tensors)):
            sizes[-1] *= size
            for st, t in zip(strides, tensors):
                st[-1] = t.stride(d)
            continue
        sizes.append(size)
        for st, t in zip(strides, tensors):
            st.append(t.stride(d))
    return sizes, strides


def _block(element_size: int) -> int:
    """Elements per program: each of the _WARPS * 32 threads moves _BYTES_PER_THREAD per operand.
    One value per dtype (not per shape), so a new shape never means a new compile."""
    return _WARPS * 32 * _BYTES_PER_THREAD // element_size


def launch_triton(out: Tensor, x: Optional[Tensor], cond: Tensor, uncond: Optional[Tensor],
                  weak: Optional[Tensor], weights: Tensor, step: Optional[Tensor],
                  noise: Optional[Tensor] = None) -> None:
    """out = step[0] * x + step[1] * guide(cond, uncond, weak, weights) (+ step[2] * noise when noise is
    given), or guide(...) without step.

    Arguments must already be validated (by the op, csrc/checks.cpp): noise comes with x and a [3] or
    [B, 3] step; out may be x.
    """
    batch, numel = cond.shape[0], cond.numel()
    if numel == 0:
        return
    slots = (out, x, cond, uncond, weak, noise)
    present = [t for t in slots if t is not None]
    per_sample = numel // batch
    weights_stride = 2 if weights.dim() == 2 else 0
    step_columns = 3 if noise is not None else 2  # (s0, s1) or, for a stochastic step, (s0, s1, s2)
    step_stride = step_columns if step is not None and step.dim() == 2 else 0
    block = _block(cond.element_size())
    if _is_dense(out, present):
        if batch == 1 or weights_stride == step_stride == 0:
            batch, per_sample = 1, numel  # one sample as far as the coefficients go
        layout = FLAT if per_sample >= block else PER_SAMPLE
        inner_sizes, stride_args = [1] * (MAX_INNER_DIMS - 1), [0] * (len(slots) * (MAX_INNER_DIMS + 1))
    else:
        sizes, inner = _inner_layout(present)
        if len(sizes) > MAX_INNER_DIMS:
            # Rare (5+ per-sample dims that no operand lays out contiguously): one launch per index
            # of the first non-trivial per-sample dim, on views.
            dim = next(d for d in range(1, cond.dim()) if cond.shape[d] > 1)
            for i in range(cond.shape[dim]):
                *views, noise_view = (None if t is None else t.select(dim, i) for t in slots)
                launch_triton(*views, weights, step, noise_view)
            return
        layout = STRIDED
        pad = [0] * (MAX_INNER_DIMS - len(sizes))
        inner_sizes = ([1] * len(pad) + sizes)[1:]  # the outermost size is implied by per_sample
        strides = iter(inner)
        stride_args = []
        for t in slots:
            stride_args += [0] * (MAX_INNER_DIMS + 1) if t is None else [t.stride(0), *pad, *next(strides)]

    blocks_per_sample = triton.cdiv(per_sample, block)
    programs = triton.cdiv(numel, block) if layout == FLAT else batch * blocks_per_sample
    # Absent operands pass cond's pointer; the kernel never reads it (HAS_* are compile-time flags).
    _guided_step_kernel[(programs,)](
        out, cond if x is None else x, cond, cond if uncond is None else uncond, cond if weak is None else weak,
        cond if noise is None else noise, weights, weights if step is None else step,
        numel, per_sample, batch - 1, blocks_per_sample, weights_stride, step_stride,
        *inner_sizes, *stride_args,
        HAS_X=x is not None, HAS_UNCOND=uncond is not None, HAS_WEAK=weak is not None,
        HAS_NOISE=noise is not None, LAYOUT=layout, F64=cond.dtype == torch.float64, BLOCK=block, num_warps=_WARPS,
        enable_fp_fusion=False,  # plain mul/add, as the CPU and CUDA kernels: the backends agree bit for bit
    )
