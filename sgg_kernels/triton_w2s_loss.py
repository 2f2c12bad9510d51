"""Triton kernels of sgg.w2s_loss (schema, checks and autograd in sgg_kernels/w2s_loss.py).

One program per (sample, chunk of BLOCK elements), numbered on grid axis 0 (axis 1 is capped at
65535 programs, which a sample of more than 65535 * BLOCK elements would pass). Forward writes one
partial sum per program into a [B, chunks] table that torch then adds in a fixed order, so the loss
is deterministic run to run (no atomics). Backward is elementwise and writes grad_v and grad_mid in
the same pass. Launchers take contiguous operands and do not validate (the op does).

Multiply-adds are not fused (enable_fp_fusion=False), as in the guidance kernels and the CPU and
CUDA builds (-ffp-contract=off, --fmad=false): every product and sum rounds as in the CPU kernel,
so the elementwise gradients match it bit for bit; the loss differs from it only in summation order.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import accumulation_dtype

# 1024 elements per program at 4 warps, 8 per thread: at 4096 (32 per thread) ptxas -v for sm_90a
# reported 168-255 registers and a stack in float64, 25 % occupancy at best;
# tests/test_triton_ptx.py keeps every variant under REGISTER_LIMIT. An SD3-1024 latent sample (256K
# elements) gives 256 programs per sample.
BLOCK = 1024
WARPS = 4


@triton.jit
def _element_terms(v_ptr, u_ptr, weak_ptr, mid_ptr, offs, mask, lam, HAS_WEAK: tl.constexpr,
                   HAS_MID: tl.constexpr, ACC: tl.constexpr):
    """(v - u - lam*(v - weak), mid, u, v) at offs, in the accumulation dtype."""
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(ACC)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(ACC)
    r = v - u
    if HAS_WEAK:
        r = r - lam * (v - tl.load(weak_ptr + offs, mask=mask, other=0.0).to(ACC))
    m = v
    if HAS_MID:
        m = tl.load(mid_ptr + offs, mask=mask, other=0.0).to(ACC)
    return r, m, u, v


@triton.jit
def _w2s_forward_kernel(partial_ptr, v_ptr, u_ptr, weak_ptr, mid_ptr, coefs_ptr, coef_stride, n, chunks,
                        HAS_WEAK: tl.constexpr, HAS_MID: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    sample = pid // chunks
    chunk = pid % chunks
    within = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = within < n
    offs = sample * n + within
    lam = tl.load(coefs_ptr + sample * coef_stride).to(ACC)
    r, m, u, v = _element_terms(v_ptr, u_ptr, weak_ptr, mid_ptr, offs, mask, lam, HAS_WEAK, HAS_MID, ACC)
    e = r * r
    if HAS_MID:
        rho_vm = tl.load(coefs_ptr + sample * coef_stride + 1).to(ACC)
        rho_mu = tl.load(coefs_ptr + sample * coef_stride + 2).to(ACC)
        e = e + rho_vm * ((v - m) * (v - m)) + rho_mu * ((m - u) * (m - u))
    tl.store(partial_ptr + sample * chunks + chunk, tl.sum(tl.where(mask, e, 0.0), axis=0))


@triton.jit
def _w2s_backward_kernel(grad_v_ptr, grad_mid_ptr, grad_ptr, v_ptr, u_ptr, weak_ptr, mid_ptr, coefs_ptr,
                         coef_stride, n, chunks, HAS_WEAK: tl.constexpr, HAS_MID: tl.constexpr,
                         ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    sample = pid // chunks
    within = (pid % chunks) * BLOCK + tl.arange(0, BLOCK)
    mask = within < n
    offs = sample * n + within
    lam = tl.load(coefs_ptr + sample * coef_stride).to(ACC)
    # grad * (2 / n), the CPU kernel's order: (grad * 2) / n rounds differently for some grads.
    scale = tl.load(grad_ptr + sample).to(ACC) * (2.0 / n.to(ACC))
    r, m, u, v = _element_terms(v_ptr, u_ptr, weak_ptr, mid_ptr, offs, mask, lam, HAS_WEAK, HAS_MID, ACC)
    if HAS_MID:
        rho_vm = tl.load(coefs_ptr + sample * coef_stride + 1).to(ACC)
        rho_mu = tl.load(coefs_ptr + sample * coef_stride + 2).to(ACC)
        vm = v - m
        tl.store(grad_v_ptr + offs, (scale * (r + rho_vm * vm)).to(grad_v_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_mid_ptr + offs, (scale * (rho_mu * (m - u) - rho_vm * vm)).to(grad_mid_ptr.dtype.element_ty),
                 mask=mask)
    else:
        tl.store(grad_v_ptr + offs, (scale * r).to(grad_v_ptr.dtype.element_ty), mask=mask)


def _layout(v, coefs):
    batch = v.shape[0]
    n = v.numel() // batch if batch else 0
    acc = tl.float64 if accumulation_dtype(v.dtype) == torch.float64 else tl.float32
    return batch, n, triton.cdiv(n, BLOCK), (3 if coefs.dim() == 2 else 0), acc


def forward_triton(loss, v, u, weak, mid, coefs) -> None:
    """Writes the per-sample losses into loss [B] (float32, or float64 for float64 operands)."""
    batch, n, chunks, coef_stride, acc = _layout(v, coefs)
    if batch == 0:
        return
    partial = torch.zeros(batch, chunks, dtype=loss.dtype, device=v.device)
    if chunks:
        _w2s_forward_kernel[(batch * chunks,)](
            partial, v, u, v if weak is None else weak, v if mid is None else mid, coefs, coef_stride, n, chunks,
            HAS_WEAK=weak is not None, HAS_MID=mid is not None, ACC=acc, BLOCK=BLOCK, num_warps=WARPS,
            enable_fp_fusion=False)
    # Chunks add in float64 in a fixed order; 0/0 = NaN for empty samples, as the mean of nothing.
    loss.copy_(partial.sum(1, dtype=torch.float64) / n if n else torch.full_like(loss, float("nan")))


def backward_triton(grad_v, grad_mid, grad, v, u, weak, mid, coefs) -> None:
    """Writes grad_v, and grad_mid when mid is given, for the per-sample loss gradient grad [B]."""
    batch, n, chunks, coef_stride, acc = _layout(v, coefs)
    if batch * n == 0:
        return
    _w2s_backward_kernel[(batch * chunks,)](
        grad_v, grad_v if grad_mid is None else grad_mid, grad, v, u, v if weak is None else weak,
        v if mid is None else mid, coefs, coef_stride, n, chunks,
        HAS_WEAK=weak is not None, HAS_MID=mid is not None, ACC=acc, BLOCK=BLOCK, num_warps=WARPS,
        enable_fp_fusion=False)
