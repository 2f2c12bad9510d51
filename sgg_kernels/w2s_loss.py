"""The training-time weak-to-strong objective as one fused op, `torch.ops.sgg.w2s_loss`.

    torch.ops.sgg.w2s_loss(v, u, weak?, mid?, coefs) -> Tensor [B]

    loss_b = mean((v - u - lam_b * sg(v - weak))^2) + rho_vm_b * mean((v - mid)^2) + rho_mu_b * mean((mid - u)^2)

`coefs` holds (lam, rho_vm, rho_mu) as float32 [3] or [B, 3]: per-sample coefficients into which the
caller has already folded the segment masks and the strength ramp (sgg_kernels.training.W2SLoss does
that). An absent `weak` drops the lam term; an absent `mid` drops both rho terms. The float64
reference is sgg_kernels.reference.w2s_loss_reference.

- The losses are in float32 (float64 for float64 inputs), like mse_loss under autocast, whatever the
  operands' dtype. Under autocast the op runs in float32 (the policy torch uses for mse_loss).
- Backward gives gradients to v and mid only: u is the target, weak is under stop-gradient, coefs
  are constants. Forward writes B numbers; backward writes grad_v and grad_mid in one pass and
  allocates nothing else the size of v.
- Backends: CPU runs the compiled C++ kernel (csrc/cpu/w2s_loss_cpu.cpp); CUDA runs Triton
  (sgg_kernels/triton_w2s_loss.py) unless the `torch` backend is selected; both fall back to the
  pure-PyTorch closed form in sgg_kernels.reference.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

from . import backends
from ._checks import check_batched_float, check_coefficients, check_operand, check_tensor
from .ops import as_coefficients
from .reference import accumulation_dtype, w2s_loss_grads_reference, w2s_loss_reference

_lib = torch.library.Library("sgg", "FRAGMENT")
_lib.define("w2s_loss(Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs) -> Tensor")
# grad_mid comes back with shape [0] when mid is absent: a schema cannot return an optional tensor.
_lib.define("w2s_loss_backward(Tensor grad, Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs)"
            " -> (Tensor, Tensor)")


def check_w2s_loss_args(op: str, v: Tensor, u: Tensor, weak: Optional[Tensor], mid: Optional[Tensor],
                        coefs: Tensor, grad: Optional[Tensor] = None) -> None:
    """Names the argument and the problem; reads no values, so it never synchronises."""
    check_batched_float("v", v, op)
    for name, t in (("u", u), ("weak", weak), ("mid", mid)):
        if t is not None or name == "u":
            check_operand(name, t, v, op, ref_name="v")
    check_coefficients("coefs", coefs, v, op, columns=3, ref_name="v")
    if grad is not None:
        check_tensor("grad", grad, op)
        if grad.shape != (v.shape[0],) or grad.device != v.device:
            raise ValueError(f"sgg.{op}: grad must have shape [{v.shape[0]}] on {v.device}, "
                             f"got {list(grad.shape)} on {grad.device}")


# Launchers: forward f(loss, v, u, weak, mid, coefs) writes loss [B]; backward
# f(grad_v, grad_mid, grad, v, u, weak, mid, coefs) writes grad_v and grad_mid (None when mid is absent).
# They take contiguous operands and do not validate.
def _forward_torch(loss, v, u, weak, mid, coefs):
    loss.copy_(w2s_loss_reference(v, u, weak, mid, coefs, loss.dtype))


def _backward_torch(grad_v, grad_mid, grad, v, u, weak, mid, coefs):
    gv, gm = w2s_loss_grads_reference(grad, v, u, weak, mid, coefs, accumulation_dtype(v.dtype))
    grad_v.copy_(gv)
    if grad_mid is not None:
        grad_mid.copy_(gm)


_warned: set = set()


def _fallback(why: str) -> tuple:
    if why not in _warned:
        _warned.add(why)
        warnings.warn(f"sgg.w2s_loss: {why}; running the slow pure-PyTorch path", stacklevel=4)
    return _forward_torch, _backward_torch


def launchers(name: str) -> tuple[Callable, Callable]:
    """(forward, backward) launchers of one backend: 'cpu', 'triton' or 'torch'."""
    if name == "torch":
        return _forward_torch, _backward_torch
    if name == "cpu":
        C = backends._C
        if C is None or not hasattr(C, "w2s_loss_forward_cpu"):
            raise RuntimeError("the sgg C++ extension is not built with w2s_loss; run `pip install --no-build-isolation -e .`")
        return C.w2s_loss_forward_cpu, C.w2s_loss_backward_cpu
    if name == "triton":
        from .triton_w2s_loss import backward_triton, forward_triton
        return forward_triton, backward_triton
    raise ValueError(f"unknown w2s_loss backend {name!r}; expected cpu, triton or torch")


def _device_launchers(device_type: str) -> tuple[Callable, Callable]:
    if device_type == "cpu":
        C = backends._C
        if C is None or not hasattr(C, "w2s_loss_forward_cpu"):
            return _fallback("the C++ extension is not built (or predates w2s_loss); "
                             "rebuild it with `pip install --no-build-isolation -e .`")
        return launchers("cpu")
    # The `cuda` backend selects Triton for this op: a reduction-type loss has no CUDA C++ kernel (README).
    if backends.get_backend() == "torch":
        return launchers("torch")
    if not backends.triton_available():
        return _fallback("triton is not installed")
    return launchers("triton")


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def _w2s_loss(v, u, weak, mid, coefs):
    check_w2s_loss_args("w2s_loss", v, u, weak, mid, coefs)
    loss = torch.empty(v.shape[0], dtype=accumulation_dtype(v.dtype), device=v.device)
    forward, _ = _device_launchers(v.device.type)
    forward(loss, *map(_contiguous, (v, u, weak, mid, coefs)))
    return loss


def _grad_outputs(v: Tensor, mid: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    grad_mid = torch.empty_like(v, memory_format=torch.contiguous_format) if mid is not None else v.new_empty(0)
    return torch.empty_like(v, memory_format=torch.contiguous_format), grad_mid


def _w2s_loss_backward(grad, v, u, weak, mid, coefs):
    check_w2s_loss_args("w2s_loss_backward", v, u, weak, mid, coefs, grad)
    grad_v, grad_mid = _grad_outputs(v, mid)
    _, backward = _device_launchers(v.device.type)
    grad = grad.to(accumulation_dtype(v.dtype)).contiguous()
    backward(grad_v, grad_mid if mid is not None else None, grad, *map(_contiguous, (v, u, weak, mid, coefs)))
    return grad_v, grad_mid


for _key in ("CPU", "CUDA"):
    _lib.impl("w2s_loss", _w2s_loss, _key)
    _lib.impl("w2s_loss_backward", _w2s_loss_backward, _key)


@torch.library.register_fake("sgg::w2s_loss")
def _w2s_loss_fake(v, u, weak, mid, coefs):
    check_w2s_loss_args("w2s_loss", v, u, weak, mid, coefs)
    return v.new_empty(v.shape[0], dtype=accumulation_dtype(v.dtype))


@torch.library.register_fake("sgg::w2s_loss_backward")
def _w2s_loss_backward_fake(grad, v, u, weak, mid, coefs):
    check_w2s_loss_args("w2s_loss_backward", v, u, weak, mid, coefs, grad)
    return _grad_outputs(v, mid)


# Autograd: the saved tensors are the inputs themselves, so forward keeps nothing extra alive.
def _setup_context(ctx, inputs, output):
    v, u, weak, mid, coefs = inputs
    ctx.save_for_backward(v, u, weak, mid, coefs)


def _backward(ctx, grad):
    v, u, weak, mid, coefs = ctx.saved_tensors
    grad_v, grad_mid = torch.ops.sgg.w2s_loss_backward(grad, v, u, weak, mid, coefs)
    return grad_v, None, None, grad_mid if mid is not None else None, None


def _double_backward(ctx, grad_v, grad_mid):
    raise RuntimeError("sgg.w2s_loss: double backward (create_graph=True through the loss) is not supported")


torch.library.register_autograd("sgg::w2s_loss", _backward, setup_context=_setup_context)
# Registered so that a second-order use fails loudly instead of silently treating grads as constants.
torch.library.register_autograd("sgg::w2s_loss_backward", _double_backward)
# Under autocast the loss runs in float32, the policy autocast applies to mse_loss.
for _device in ("cpu", "cuda"):
    torch.library.register_autocast("sgg::w2s_loss", _device, torch.float32)


def w2s_loss(v: Tensor, u: Tensor, weak: Optional[Tensor] = None, mid: Optional[Tensor] = None,
             coefs=(0.0, 0.0, 0.0)) -> Tensor:
    """Per-sample W2S losses [B]; coefs = (lam, rho_vm, rho_mu) as a float32 [3] or [B, 3] tensor or a sequence."""
    return torch.ops.sgg.w2s_loss(v, u, weak, mid, as_coefficients(coefs, v))
