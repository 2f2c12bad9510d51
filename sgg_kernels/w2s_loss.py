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
  (sgg_kernels/triton_w2s_loss.py) unless the `torch` backend is selected (or triton is missing,
  with a warning), which runs the pure-PyTorch closed form in sgg_kernels.reference. The schema,
  checks and CPU/CUDA kernels are in the C++ libraries (csrc/w2s_loss_ops.cpp, csrc/cuda/cuda_ops.cpp);
  the traced (fake) kernel is in sgg_kernels/fake_kernels.py.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

from . import backends
from ._library import replacing_library_autograd
from .ops import as_coefficients
from .reference import accumulation_dtype, w2s_loss_grads_reference, w2s_loss_reference


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


def launchers(name: str) -> tuple[Callable, Callable]:
    """(forward, backward) launchers of one backend: 'cpu', 'triton' or 'torch'."""
    if name == "torch":
        return _forward_torch, _backward_torch
    if name == "cpu":
        return torch.ops.sgg._w2s_loss_cpu, torch.ops.sgg._w2s_loss_backward_cpu
    if name == "triton":
        from .triton_w2s_loss import backward_triton, forward_triton
        return forward_triton, backward_triton
    raise ValueError(f"unknown w2s_loss backend {name!r}; expected cpu, triton or torch")


_warned: set = set()


def _gpu_launchers() -> tuple[Callable, Callable]:
    """The `cuda` backend selects Triton for this op: a reduction-type loss has no CUDA C++ kernel (docs/training.md says why)."""
    if backends.get_backend() == "torch":
        return launchers("torch")
    if not backends.triton_available():
        if "triton" not in _warned:
            _warned.add("triton")
            warnings.warn("sgg.w2s_loss: triton is not installed; running the slow pure-PyTorch path on CUDA",
                          stacklevel=4)
        return launchers("torch")
    return launchers("triton")


# The library's CUDA kernels check each call, allocate the outputs and hand them to these.
def _python_gpu_w2s_loss(loss, v, u, weak, mid, coefs):
    _gpu_launchers()[0](loss, v, u, weak, mid, coefs)


def _python_gpu_w2s_loss_backward(grad_v, grad_mid, grad, v, u, weak, mid, coefs):
    _gpu_launchers()[1](grad_v, grad_mid, grad, v, u, weak, mid, coefs)


_lib = torch.library.Library("sgg", "IMPL")
_lib.impl("_python_gpu_w2s_loss", _python_gpu_w2s_loss, "CUDA")
_lib.impl("_python_gpu_w2s_loss_backward", _python_gpu_w2s_loss_backward, "CUDA")


# Autograd: the saved tensors are the inputs themselves, so forward keeps nothing extra alive.
def _setup_context(ctx, inputs, output):
    v, u, weak, mid, coefs = inputs
    # u is the target and coefs are constants: a gradient they ask for would silently be zero.
    for name, needs in (("u", ctx.needs_input_grad[1]), ("coefs", ctx.needs_input_grad[4])):
        if needs:
            raise ValueError(f"sgg.w2s_loss: {name} requires grad, but the loss treats it as a constant; "
                             f"pass {name}.detach()")
    ctx.save_for_backward(v, u, weak, mid, coefs)


def _backward(ctx, grad):
    v, u, weak, mid, coefs = ctx.saved_tensors
    grad_v, grad_mid = torch.ops.sgg.w2s_loss_backward(grad, v, u, weak, mid, coefs)
    return grad_v, None, None, grad_mid if mid is not None else None, None


def _double_backward(ctx, grad_v, grad_mid):
    raise RuntimeError("sgg.w2s_loss: double backward (create_graph=True through the loss) is not supported")


with replacing_library_autograd():
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
