"""The one reference implementation of the guidance rule.

In float64 it is the test oracle and the benchmarks' correctness check; in the input's accumulation
dtype (float32, or float64 for float64 inputs) it is the pure-PyTorch backend and the CPU fallback.

    guide  = cond + w[..., 0] * (cond - uncond) + w[..., 1] * (cond - weak)
    x_next = step[..., 0] * x + step[..., 1] * guide (+ step[..., 2] * noise, for a stochastic step)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


# The dtypes every op accepts (the library's checks, csrc/checks.cpp, enforce the same list).
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def per_sample(coefs: Tensor, column: int, ndim: int, dtype: torch.dtype) -> Tensor:
    """Column `column` of a [2] or [B, 2] coefficient tensor, shaped to broadcast over [B, ...]."""
    col = coefs[..., column].to(dtype)
    return col.reshape(-1, *([1] * (ndim - 1))) if coefs.dim() == 2 else col


def guided_step_reference(
    x: Optional[Tensor],
    cond: Tensor,
    uncond: Optional[Tensor],
    weak: Optional[Tensor],
    weights: Tensor,
    step: Optional[Tensor],
    dtype: torch.dtype = torch.float64,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """`x_next` (or `guide` when `step` is None), computed and returned in `dtype`. With `noise` (a
    stochastic step), step has a third column: x_next = step[0] * x + step[1] * guide + step[2] * noise."""
    c = cond.to(dtype)
    g = c
    if uncond is not None:
        g = g + per_sample(weights, 0, c.dim(), dtype) * (c - uncond.to(dtype))
    if weak is not None:
        g = g + per_sample(weights, 1, c.dim(), dtype) * (c - weak.to(dtype))
    if step is None:
        return g
    out = per_sample(step, 0, c.dim(), dtype) * x.to(dtype) + per_sample(step, 1, c.dim(), dtype) * g
    return out if noise is None else out + per_sample(step, 2, c.dim(), dtype) * noise.to(dtype)


def guide_reference(cond: Tensor, uncond: Optional[Tensor], weak: Optional[Tensor], weights: Tensor,
                    dtype: torch.dtype = torch.float64) -> Tensor:
    return guided_step_reference(None, cond, uncond, weak, weights, None, dtype)


def launch_torch(out: Tensor, x: Optional[Tensor], cond: Tensor, uncond: Optional[Tensor],
                 weak: Optional[Tensor], weights: Tensor, step: Optional[Tensor], noise: Optional[Tensor] = None) -> None:
    """The `torch` backend, with the launchers' signature: writes the result into `out` (which may be `x`)."""
    out.copy_(guided_step_reference(x, cond, uncond, weak, weights, step, accumulation_dtype(cond.dtype), noise))


# ---- training-time W2S objective (sgg.w2s_loss) ----
#
#   loss_b = mean((v - u - lam_b * sg(v - weak))^2) + rho_vm_b * mean((v - mid)^2) + rho_mu_b * mean((mid - u)^2)
#
# coefs = (lam, rho_vm, rho_mu), float32 [3] or [B, 3]; an absent weak drops the lam term, an absent
# mid drops both rho terms. Means run over each sample's elements; sg is stop-gradient.

def w2s_loss_reference(v: Tensor, u: Tensor, weak: Optional[Tensor], mid: Optional[Tensor], coefs: Tensor,
                       dtype: torch.dtype = torch.float64) -> Tensor:
    """Per-sample losses [B] in `dtype`; differentiable, with gradients where the objective gives them."""
    batch, ndim = v.shape[0], v.dim()
    v_, u_ = v.to(dtype), u.to(dtype)
    resid = v_ - u_
    if weak is not None:
        resid = resid - per_sample(coefs, 0, ndim, dtype) * (v_ - weak.to(dtype)).detach()
    loss = resid.square()
    if mid is not None:
        m = mid.to(dtype)
        loss = loss + per_sample(coefs, 1, ndim, dtype) * (v_ - m).square() \
                    + per_sample(coefs, 2, ndim, dtype) * (m - u_).square()
    return loss.reshape(batch, -1).mean(1)


def w2s_loss_grads_reference(grad: Tensor, v: Tensor, u: Tensor, weak: Optional[Tensor], mid: Optional[Tensor],
                             coefs: Tensor, dtype: torch.dtype = torch.float64) -> tuple:
    """(grad_v, grad_mid or None) of sum(grad * w2s_loss_reference(...)), in `dtype`; the closed form the kernels use."""
    batch, ndim = v.shape[0], v.dim()
    n = v.numel() // batch if batch else 1
    scale = (grad.to(dtype) * (2.0 / n)).reshape(-1, *([1] * (ndim - 1)))
    v_, u_ = v.to(dtype), u.to(dtype)
    resid = v_ - u_
    if weak is not None:
        resid = resid - per_sample(coefs, 0, ndim, dtype) * (v_ - weak.to(dtype))
    if mid is None:
        return scale * resid, None
    m = mid.to(dtype)
    v_minus_mid = v_ - m
    rho_vm = per_sample(coefs, 1, ndim, dtype)
    grad_mid = per_sample(coefs, 2, ndim, dtype) * (m - u_) - rho_vm * v_minus_mid
    return scale * (resid + rho_vm * v_minus_mid), scale * grad_mid
