"""Python side of the `torch.ops.sgg` guidance operators: autograd and the float-or-tensor wrappers.

    torch.ops.sgg.guide(cond, uncond?, weak?, weights) -> Tensor
    torch.ops.sgg.guided_step(x, cond, uncond?, weak?, weights, step, noise?) -> Tensor
    torch.ops.sgg.guided_step_(x, cond, uncond?, weak?, weights, step, noise?) -> ()     # writes x

The schemas, argument checks and CPU/CUDA kernels live in the C++ operator libraries
(csrc/registration.cpp, csrc/guidance_ops.cpp); sgg_kernels.reference has the formula. `weights` =
(lam_cdg, lam_cag) and `step` = (a, b) are float32 tensors of shape [2] or [B, 2]; with `noise` (a
stochastic step) `step` = (a, b, c), [3] or [B, 3], and x_next gains c * noise. They stay on the
device, so no call synchronises and a compiled or graph-captured step can be replayed with new values.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from ._library import replacing_library_autograd
from .reference import accumulation_dtype, guided_step_reference, per_sample


# Autograd. The op is linear in x, cond, uncond and weak (each gradient is the output gradient times
# a per-sample coefficient) and bilinear in the coefficients, whose gradients are per-sample (or, for
# shared [2] coefficients, total) sums. Forward mode (jvp) is the same linear map applied to tangents.
def _column(coefs: Optional[Tensor], k: int, like: Tensor) -> Tensor:
    return per_sample(coefs, k, like.dim(), like.dtype)


def _reduce_to(coefs: Tensor, *columns: Tensor) -> Tensor:
    """d(out)/d(coefs): each column's products summed per sample ([B, 2]) or over everything ([2])."""
    if coefs.dim() == 2:
        sums = [c.reshape(c.shape[0], -1).sum(1) for c in columns]
    else:
        sums = [c.sum() for c in columns]
    return torch.stack(sums, -1).to(coefs.dtype)


def _below_autograd(is_step, x, cond, uncond, weak, weights, step, noise):
    """The op's device kernel: guided_step, or guide when is_step is False (x, step and noise are None)."""
    with torch._C._AutoDispatchBelowAutograd():
        if is_step:
            return torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step, noise)
        return torch.ops.sgg.guide(cond, uncond, weak, weights)


class _GuidedStep(torch.autograd.Function):
    """guided_step, or guide (is_step False: x, step and noise are None)."""

    forward = staticmethod(_below_autograd)

    @staticmethod
    def setup_context(ctx, inputs, output):
        is_step, x, cond, uncond, weak, weights, step, noise = inputs
        ctx.present = (is_step, uncond is not None, weak is not None, noise is not None)
        ctx.save_for_backward(*inputs[1:])
        ctx.save_for_forward(*inputs[1:])

    @staticmethod
    def backward(ctx, grad):
        x, cond, uncond, weak, weights, step, noise = ctx.saved_tensors
        has_x, has_u, has_w, has_n = ctx.present
        acc = accumulation_dtype(grad.dtype)
        g = grad.to(acc)
        b = _column(step, 1, g) if has_x else torch.ones((), dtype=acc, device=g.device)
        w_u, w_w = _column(weights, 0, g) * b, _column(weights, 1, g) * b
        need = ctx.needs_input_grad[1:]
        grads = [None] * 7
        if has_x and need[0]:
            grads[0] = (g * _column(step, 0, g)).to(grad.dtype)
        if need[1]:
            grads[1] = (g * (b + (w_u if has_u else 0) + (w_w if has_w else 0))).to(grad.dtype)
        if has_u and need[2]:
            grads[2] = (-g * w_u).to(grad.dtype)
        if has_w and need[3]:
            grads[3] = (-g * w_w).to(grad.dtype)
        if need[4] or (has_x and need[5]):
            c = cond.to(acc)
            d_u = g * (c - uncond.to(acc)) if has_u else torch.zeros_like(g)
            d_w = g * (c - weak.to(acc)) if has_w else torch.zeros_like(g)
            if need[4]:
                grads[4] = _reduce_to(weights, d_u * b, d_w * b)
            if has_x and need[5]:
                guided = torch.ops.sgg.guide(cond, uncond, weak, weights).to(acc)
                columns = (g * x.to(acc), g * guided) + ((g * noise.to(acc),) if has_n else ())
                grads[5] = _reduce_to(step, *columns)
        if has_n and need[6]:
            grads[6] = (g * _column(step, 2, g)).to(grad.dtype)
        return (None, *grads)

    @staticmethod
    def jvp(ctx, _, tx, tcond, tuncond, tweak, tweights, tstep, tnoise):
        x, cond, uncond, weak, weights, step, noise = ctx.saved_tensors
        has_x, has_u, has_w, has_n = ctx.present
        acc = accumulation_dtype(cond.dtype)
        c = cond.to(acc)
        zero = torch.zeros_like(c)
        t_of = lambda t: zero if t is None else t.to(acc)  # noqa: E731  (a missing tangent is zero)
        dc = t_of(tcond)
        d_guide = dc
        guided = c
        for k, present, operand, tangent in ((0, has_u, uncond, tuncond), (1, has_w, weak, tweak)):
            if not present:
                continue
            diff = c - operand.to(acc)
            d_guide = d_guide + _column(weights, k, c) * (dc - t_of(tangent))
            if tweights is not None:
                d_guide = d_guide + _column(tweights, k, c) * diff
            guided = guided + _column(weights, k, c) * diff
        if not has_x:
            return d_guide.to(cond.dtype)
        out = _column(step, 0, c) * t_of(tx) + _column(step, 1, c) * d_guide
        if tstep is not None:
            out = out + _column(tstep, 0, c) * x.to(acc) + _column(tstep, 1, c) * guided
        if has_n:
            out = out + _column(step, 2, c) * t_of(tnoise)
            if tstep is not None:
                out = out + _column(tstep, 2, c) * noise.to(acc)
        return out.to(x.dtype)


def _autograd_kernel(is_step, x, cond, uncond, weak, weights, step, noise):
    if torch._C._are_functorch_transforms_active():
        # torch.func (jvp, grad, vmap) would route an autograd.Function through a higher-order op that
        # cannot run from inside the dispatcher; there the formula runs as plain differentiable ops,
        # after the ops' own checks (their Meta kernel, on stand-ins of the logical shapes).
        meta = [None if t is None else torch.empty(t.shape, dtype=t.dtype, device="meta")
                for t in (x, cond, uncond, weak, weights, step, noise)]
        op, args = (torch.ops.sgg.guided_step.default, meta) if is_step else (torch.ops.sgg.guide.default, meta[1:5])
        op.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.Meta), *args)
        out = guided_step_reference(x, cond, uncond, weak, weights, step, accumulation_dtype(cond.dtype), noise)
        return out.to(cond.dtype)
    args = (x, cond, uncond, weak, weights, step, noise)
    if (torch.is_grad_enabled() and torch._C._any_requires_grad(*args)) or fwAD._current_level >= 0:
        return _GuidedStep.apply(is_step, *args)
    return _below_autograd(is_step, *args)  # nothing to differentiate: no autograd.Function overhead


def _guide_autograd(cond, uncond, weak, weights):
    return _autograd_kernel(False, None, cond, uncond, weak, weights, None, None)


def _guided_step_autograd(x, cond, uncond, weak, weights, step, noise=None):
    return _autograd_kernel(True, x, cond, uncond, weak, weights, step, noise)


_IN_PLACE_ARGS = ("x", "cond", "uncond", "weak", "weights", "step", "noise")
# Looked up once: each torch.ops attribute lookup costs microseconds on a path every in-place call takes.
_IN_PLACE = torch.ops.sgg.guided_step_.default
_AFTER_AUTOGRAD, _AFTER_INPLACE_OR_VIEW = torch._C._after_autograd_keyset, torch._C._after_ADInplaceOrView_keyset


def _guided_step__autograd(keyset, *args):
    """guided_step_ records no graph: an input that needs one is refused before x is written (else it
    would be read into x with no grad_fn and no warning)."""
    grad_mode, forward_ad = torch.is_grad_enabled(), fwAD._current_level >= 0
    for name, t in zip(_IN_PLACE_ARGS, args):
        if t is None:
            continue
        if grad_mode and t.requires_grad:
            raise RuntimeError(f"sgg.guided_step_: {name} requires grad, and the in-place op records no graph; use "
                               "the out-of-place guided_step for autograd, or run under torch.no_grad()")
        if forward_ad and fwAD.unpack_dual(t).tangent is not None:
            raise RuntimeError(f"sgg.guided_step_: {name} carries a forward-mode tangent, which the in-place op "
                               "would drop; use guided_step")
    with torch._C._AutoDispatchBelowAutograd():
        _IN_PLACE.redispatch(keyset & _AFTER_AUTOGRAD, *args)


def _guided_step__inplace_or_view(keyset, x, *rest):
    """Bumps x's version after the write, so autograd refuses a graph that saved the old x."""
    with torch._C._AutoDispatchBelowADInplaceOrView():
        _IN_PLACE.redispatch(keyset & _AFTER_INPLACE_OR_VIEW, x, *rest)
    torch.autograd.graph.increment_version(x)


# Registered from Python because LibTorch's stable ABI has no autograd or ADInplaceOrView API. They replace
# the library's own Autograd kernels, which in a process that loads only the C++ libraries refuse the
# calls that need a graph (csrc/library_only_autograd.cpp, docs/ops.md).
_lib = torch.library.Library("sgg", "IMPL")
with replacing_library_autograd():
    _lib.impl("guide", _guide_autograd, "Autograd")
    _lib.impl("guided_step", _guided_step_autograd, "Autograd")
    _lib.impl("guided_step_", _guided_step__autograd, "Autograd", with_keyset=True)
_lib.impl("guided_step_", _guided_step__inplace_or_view, "ADInplaceOrView", with_keyset=True)


# Python wrappers: accept floats as well as tensors for weights and step.
Coefficients = Union[Tensor, Sequence[float], Sequence[Sequence[float]]]


def as_coefficients(value: Coefficients, like: Tensor, name: str = "coefs") -> Tensor:
    """A float32 coefficient tensor on like's device (no copy if value already is one).

    Floats, or a tensor on another device, on a GPU are a blocking host-to-device copy: the host waits
    for the stream, and during CUDA graph capture the copy is illegal, so it is refused there by name.
    Device tensors cost nothing and can be refilled between graph replays.
    """
    on_device = isinstance(value, Tensor) and value.device == like.device
    if not on_device and like.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        given = f"a tensor on {value.device}" if isinstance(value, Tensor) else "floats"
        raise RuntimeError(f"{name}: {given} cannot be copied to {like.device} during CUDA graph capture; pass a "
                           f"float32 tensor on {like.device} (fill it with new values before each replay)")
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=torch.float32)
    return torch.tensor(value, dtype=torch.float32, device=like.device)


def guide(cond: Tensor, uncond: Optional[Tensor] = None, weak: Optional[Tensor] = None,
          weights: Coefficients = (0.0, 0.0)) -> Tensor:
    """cond + lam_cdg * (cond - uncond) + lam_cag * (cond - weak), with weights = (lam_cdg, lam_cag)."""
    return torch.ops.sgg.guide(cond, uncond, weak, as_coefficients(weights, cond, "weights"))


def guided_step(x: Tensor, cond: Tensor, uncond: Optional[Tensor] = None, weak: Optional[Tensor] = None,
                weights: Coefficients = (0.0, 0.0), step: Coefficients = (1.0, 0.0),
                noise: Optional[Tensor] = None) -> Tensor:
    """step_a * x + step_b * guide(cond, uncond, weak, weights); for Euler, step = (1, t_next - t). With
    noise, step = (a, b, c) and c * noise is added (an SDE step's fresh noise, in the same pass)."""
    return torch.ops.sgg.guided_step(x, cond, uncond, weak, as_coefficients(weights, cond, "weights"),
                                     as_coefficients(step, cond, "step"), noise)


def guided_step_(x: Tensor, cond: Tensor, uncond: Optional[Tensor] = None, weak: Optional[Tensor] = None,
                 weights: Coefficients = (0.0, 0.0), step: Coefficients = (1.0, 0.0),
                 noise: Optional[Tensor] = None) -> Tensor:
    """guided_step written into x; returns x."""
    torch.ops.sgg.guided_step_(x, cond, uncond, weak, as_coefficients(weights, cond, "weights"),
                               as_coefficients(step, cond, "step"), noise)
    return x
