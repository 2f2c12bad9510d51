"""`W2SLoss`: the training-time weak-to-strong objective, a drop-in for the MSE loss of a flow-matching step.

    loss_fn = W2SLoss(weak_type="segmented", w_scale=0.6, weak_loss_ratio=0.2)
    loss = loss_fn(v, u, t, weak=v_null.detach(), mid=v_mid)        # instead of F.mse_loss(v, u)

The options mirror the SGG authors' SiT training code (docs/training.md). With
lam = w_scale * progress**weak_alpha and rho = weak_loss_ratio, the per-sample loss is

    none       mean((v - u)^2)
    uncond     mean((v - (u + lam * sg(v - weak)))^2)          weak = v(x_t, t, null)
    layerskip  the same, weak = the prediction with a block skipped
    separate   the same, weak = a separate weak model's prediction
    branch     mean((v - (u + lam * sg(v - mid)))^2) + rho * mean((mid - u)^2)     mid = early-exit head
    segmented  by each sample's t: the uncond form for guidance_low <= t <= guidance_high;
               mean((v - u)^2) + rho * mean((v - mid)^2) below guidance_low (gradient to v and mid);
               mean((v - u)^2) above guidance_high

t must hold noise levels in [0, 1]. With validate=True (the default) a NaN or out-of-range t raises,
which reads one bool back from t's device (a host sync on a GPU; none on CPU). validate=False skips
that read for a sync-free training step; a sample whose t is NaN or outside [0, 1] then gets a NaN
loss (and NaN gradients), so bad noise levels still never give a finite wrong loss.

It computes all of that in one fused op, torch.ops.sgg.w2s_loss (sgg_kernels/w2s_loss.py).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .w2s_loss import w2s_loss

# The operands each variant reads besides pred and target.
OPERANDS = {
    "none": (), "uncond": ("weak",), "layerskip": ("weak",), "separate": ("weak",), "branch": ("mid",),
    "segmented": ("weak", "mid"),
}


# The op's coefficients are float32: an option finite in float64 but beyond this would become inf.
FLOAT32_MAX = torch.finfo(torch.float32).max


def _check_option(name: str, value, low: float = 0.0, high: float = FLOAT32_MAX) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"W2SLoss: {name} must be a finite number in [{low:g}, {high:.4g}], got {value!r}"
                         + (" (the op's coefficients are float32)" if high == FLOAT32_MAX else ""))
    return float(value)


class W2SLoss(torch.nn.Module):
    """The W2S objective; call it as loss_fn(pred, target, t, weak=..., mid=..., progress=...)."""

    def __init__(self, weak_type: str = "none", w_scale: float = 0.6, weak_loss_ratio: float = 0.2,
                 guidance_low: float = 0.2, guidance_high: float = 0.8, weak_alpha: float = 0.0,
                 reduction: str = "mean", validate: bool = True):
        super().__init__()
        if weak_type not in OPERANDS:
            raise ValueError(f"W2SLoss: weak_type must be one of {', '.join(OPERANDS)}, got {weak_type!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"W2SLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.weak_type, self.reduction = weak_type, reduction
        self.w_scale = _check_option("w_scale", w_scale)
        self.weak_loss_ratio = _check_option("weak_loss_ratio", weak_loss_ratio)
        self.guidance_low = _check_option("guidance_low", guidance_low, 0.0, 1.0)
        self.guidance_high = _check_option("guidance_high", guidance_high, 0.0, 1.0)
        if self.guidance_low > self.guidance_high:
            raise ValueError(f"W2SLoss: guidance_low ({guidance_low}) must not exceed guidance_high ({guidance_high})")
        self.weak_alpha = _check_option("weak_alpha", weak_alpha)
        if not isinstance(validate, bool):
            raise TypeError(f"W2SLoss: validate must be True or False, got {validate!r}")
        self.validate = validate

    def extra_repr(self) -> str:
        return (f"weak_type={self.weak_type!r}, w_scale={self.w_scale}, weak_loss_ratio={self.weak_loss_ratio}, "
                f"guidance_low={self.guidance_low}, guidance_high={self.guidance_high}, weak_alpha={self.weak_alpha}, "
                f"validate={self.validate}")

    def strength(self, progress: float = 1.0) -> float:
        """lam = w_scale * progress**weak_alpha, progress = the fraction of training done (0**0 = 1)."""
        return self.w_scale * _check_option("progress", progress, 0.0, 1.0) ** self.weak_alpha

    def coefficients(self, t: Optional[Tensor], batch: int, device: torch.device, progress: float = 1.0) -> Tensor:
        """The op's (lam, rho_vm, rho_mu): float32 [3], or [B, 3] from t for the segmented variant."""
        lam, rho = self.strength(progress), self.weak_loss_ratio
        if self.weak_type != "segmented":
            shared = {"none": (0.0, 0.0, 0.0), "branch": (lam, 0.0, rho)}.get(self.weak_type, (lam, 0.0, 0.0))
            return torch.tensor(shared, dtype=torch.float32, device=device)
        if not isinstance(t, Tensor) or t.shape != (batch,) or not t.is_floating_point() or t.device != device:
            got = f"shape {list(t.shape)}, {t.dtype} on {t.device}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"W2SLoss(segmented): t must be a floating tensor of shape [{batch}] on {device}, got {got}")
        valid = (t >= 0) & (t <= 1)  # False for NaN
        if self.validate and not bool(valid.all()):  # the one host read (see the module docstring)
            bad = (~valid).nonzero().flatten()
            raise ValueError(f"W2SLoss(segmented): t must hold noise levels in [0, 1] (t = 1 is noise); {bad.numel()} "
                             f"of {batch} are not, the first at index {bad[0].item()}: {t[bad[0]].item()}")
        inside = ((t >= self.guidance_low) & (t <= self.guidance_high)).float()
        below = (t < self.guidance_low).float()
        coefs = torch.stack([lam * inside, rho * below, torch.zeros_like(inside)], dim=1)
        return torch.where(valid[:, None], coefs, torch.nan)  # unvalidated bad t: a NaN loss, not a wrong one

    def forward(self, pred: Tensor, target: Tensor, t: Optional[Tensor] = None, weak: Optional[Tensor] = None,
                mid: Optional[Tensor] = None, progress: Union[float, int] = 1.0) -> Tensor:
        """The loss of one training step (the formulas are in the module docstring).

        pred: the model's velocity v, [B, ...], the tensor that takes the gradient (and `mid` for
        'branch' and 'segmented'). target: the flow-matching target u, same shape, dtype and device.
        t: each sample's noise level, [B] in [0, 1] with t = 1 noise; read by 'segmented' only.
        weak: the weak prediction for 'uncond', 'layerskip', 'separate' and 'segmented' (pass it
        detached; the loss stops its gradient anyway). mid: the early-exit head's prediction for
        'branch' and 'segmented'. progress: the fraction of training done, in [0, 1], for weak_alpha.

        Returns a scalar for reduction 'mean' (the default) and 'sum', else the per-sample losses [B];
        float64 for float64 inputs, else float32. A missing or unused operand, or a shape,
        device or dtype mismatch, raises ValueError or TypeError naming the argument.
        """
        given = {"weak": weak, "mid": mid}
        needed = OPERANDS[self.weak_type]
        for name, tensor in given.items():
            if (tensor is None) == (name in needed):
                problem = "needs" if tensor is None else "does not use"
                raise ValueError(f"W2SLoss(weak_type={self.weak_type!r}) {problem} the `{name}` prediction")
        for name, tensor in (("target", target), *given.items()):
            if tensor is not None and (tensor.shape != pred.shape or tensor.device != pred.device):
                raise ValueError(f"W2SLoss: {name} has shape {list(tensor.shape)} on {tensor.device} but pred has "
                                 f"shape {list(pred.shape)} on {pred.device}")
            if tensor is not None and tensor.dtype != pred.dtype and not torch.is_autocast_enabled(pred.device.type):
                raise TypeError(f"W2SLoss: {name} has dtype {tensor.dtype} but pred has {pred.dtype}; cast them to one "
                                "dtype or run under torch.autocast, which computes the loss in float32")
        coefs = self.coefficients(t, pred.shape[0], pred.device, progress)
        # branch: the early-exit head is both the stop-gradient weak signal and the rho term's operand.
        losses = torch.ops.sgg.w2s_loss(pred, target, mid if self.weak_type == "branch" else weak, mid, coefs)
        if self.reduction == "none":
            return losses
        return losses.sum() if self.reduction == "sum" else losses.mean()
