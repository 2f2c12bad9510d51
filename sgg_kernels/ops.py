"""The `torch.ops.sgg` operators: schemas (defined here, once), device kernels, fake kernels, autograd.

    torch.ops.sgg.guide(cond, uncond?, weak?, weights) -> Tensor
    torch.ops.sgg.guided_step(x, cond, uncond?, weak?, weights, step) -> Tensor
    torch.ops.sgg.guided_step_(x, cond, uncond?, weak?, weights, step) -> ()     # writes x

See sgg_kernels.reference for the formula. `weights` = (lam_cdg, lam_cag) and `step` = (a, b) are
float32 tensors of shape [2] or [B, 2]; they stay on the device, so no call synchronises and a
compiled or graph-captured step can be replayed with new values.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_guidance_args
from .backends import device_launcher
from .reference import per_sample

_lib = torch.library.Library("sgg", "DEF")
_lib.define("guide(Tensor cond, Tensor? uncond, Tensor? weak, Tensor weights) -> Tensor")
_lib.define("guided_step(Tensor x, Tensor cond, Tensor? uncond, Tensor? weak, Tensor weights, Tensor step) -> Tensor")
# Returns nothing: torch.compile functionalizes mutating custom ops only when they return no alias.
_lib.define("guided_step_(Tensor(a!) x, Tensor cond, Tensor? uncond, Tensor? weak, Tensor weights, Tensor step) -> ()")


# Device kernels: one function per op for every device; the launcher is chosen per device type
# (CPU: compiled C++; CUDA: the selected backend, see sgg_kernels.backends).
def _guide(cond, uncond, weak, weights):
    check_guidance_args("guide", None, cond, uncond, weak, weights, None)
    out = torch.empty_like(cond)
    device_launcher(cond.device.type)(out, None, cond, uncond, weak, weights, None)
    return out


def _guided_step(x, cond, uncond, weak, weights, step):
    check_guidance_args("guided_step", x, cond, uncond, weak, weights, step)
    out = torch.empty_like(x)
    device_launcher(x.device.type)(out, x, cond, uncond, weak, weights, step)
    return out


def _guided_step_(x, cond, uncond, weak, weights, step):
    check_guidance_args("guided_step_", x, cond, uncond, weak, weights, step, in_place=True)
    device_launcher(x.device.type)(x, x, cond, uncond, weak, weights, step)


for _name, _fn in (("guide", _guide), ("guided_step", _guided_step), ("guided_step_", _guided_step_)):
    for _key in ("CPU", "CUDA"):
        _lib.impl(_name, _fn, _key)


# Fake kernels: the same checks and the same output layout (empty_like), with no data.
@torch.library.register_fake("sgg::guide")
def _guide_fake(cond, uncond, weak, weights):
    check_guidance_args("guide", None, cond, uncond, weak, weights, None)
    return torch.empty_like(cond)


@torch.library.register_fake("sgg::guided_step")
def _guided_step_fake(x, cond, uncond, weak, weights, step):
    check_guidance_args("guided_step", x, cond, uncond, weak, weights, step)
    return torch.empty_like(x)


@torch.library.register_fake("sgg::guided_step_")
def _guided_step__fake(x, cond, uncond, weak, weights, step):
    check_guidance_args("guided_step_", x, cond, uncond, weak, weights, step, in_place=True)


# Autograd: the op is linear in every operand, so each gradient is the output gradient times a
# per-sample coefficient. weights and step are treated as constants (no gradient).
def _scaled(grad: Tensor, coef: Tensor) -> Tensor:
    return (grad * coef).to(grad.dtype)


def _guide_grads(grad: Tensor, weights: Tensor, has_uncond: bool, has_weak: bool, outer: Tensor):
    """Gradients for (cond, uncond, weak) of outer * guide(...), outer a per-sample factor."""
    w_u = per_sample(weights, 0, grad.dim(), torch.float32) * outer
    w_w = per_sample(weights, 1, grad.dim(), torch.float32) * outer
    k_cond = outer + (w_u if has_uncond else 0) + (w_w if has_weak else 0)
    return (_scaled(grad, k_cond), _scaled(grad, -w_u) if has_uncond else None,
            _scaled(grad, -w_w) if has_weak else None)


def _setup_guide(ctx, inputs, output):
    cond, uncond, weak, weights = inputs
    ctx.save_for_backward(weights)
    ctx.present = (uncond is not None, weak is not None)


def _backward_guide(ctx, grad):
    (weights,) = ctx.saved_tensors
    one = torch.ones((), dtype=torch.float32, device=grad.device)
    return (*_guide_grads(grad, weights, *ctx.present, one), None)


def _setup_guided_step(ctx, inputs, output):
    x, cond, uncond, weak, weights, step = inputs
    ctx.save_for_backward(weights, step)
    ctx.present = (uncond is not None, weak is not None)


def _backward_guided_step(ctx, grad):
    weights, step = ctx.saved_tensors
    a = per_sample(step, 0, grad.dim(), torch.float32)
    b = per_sample(step, 1, grad.dim(), torch.float32)
    return (_scaled(grad, a), *_guide_grads(grad, weights, *ctx.present, b), None, None)


torch.library.register_autograd("sgg::guide", _backward_guide, setup_context=_setup_guide)
torch.library.register_autograd("sgg::guided_step", _backward_guided_step, setup_context=_setup_guided_step)


# Python wrappers: accept floats as well as tensors for weights and step.
Coefficients = Union[Tensor, Sequence[float], Sequence[Sequence[float]]]


def as_coefficients(value: Coefficients, like: Tensor) -> Tensor:
    """A float32 coefficient tensor on like's device (no copy if value already is one)."""
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=torch.float32)
    return torch.tensor(value, dtype=torch.float32, device=like.device)


def guide(cond: Tensor, uncond: Optional[Tensor] = None, weak: Optional[Tensor] = None,
          weights: Coefficients = (0.0, 0.0)) -> Tensor:
    """cond + lam_cdg * (cond - uncond) + lam_cag * (cond - weak), with weights = (lam_cdg, lam_cag)."""
    return torch.ops.sgg.guide(cond, uncond, weak, as_coefficients(weights, cond))


def guided_step(x: Tensor, cond: Tensor, uncond: Optional[Tensor] = None, weak: Optional[Tensor] = None,
                weights: Coefficients = (0.0, 0.0), step: Coefficients = (1.0, 0.0)) -> Tensor:
    """step_a * x + step_b * guide(cond, uncond, weak, weights); for Euler, step = (1, t_next - t)."""
    return torch.ops.sgg.guided_step(x, cond, uncond, weak, as_coefficients(weights, cond),
                                     as_coefficients(step, cond))


def guided_step_(x: Tensor, cond: Tensor, uncond: Optional[Tensor] = None, weak: Optional[Tensor] = None,
                 weights: Coefficients = (0.0, 0.0), step: Coefficients = (1.0, 0.0)) -> Tensor:
    """guided_step written into x; returns x."""
    torch.ops.sgg.guided_step_(x, cond, uncond, weak, as_coefficients(weights, cond), as_coefficients(step, cond))
    return x
