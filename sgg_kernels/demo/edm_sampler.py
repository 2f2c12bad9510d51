"""EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1 without churn), guided through the
project's op: every evaluation's guided denoiser is ``torch.ops.sgg.guide(D_main, D_uncond, D_weak, lam)``.

EDM2's guided denoiser ``D_g + w (D_main - D_g)`` is ``D_main + (w - 1) (D_main - D_g)``: lam = w - 1, which
is what ``GuidanceSchedule.autoguidance(w)`` (guide = weak model) and ``GuidanceSchedule.cfg(w)`` (guide =
unconditional model) give. A schedule's noise level t maps to EDM's sigma through the flow path:
``x_t = (1 - t) (x0 + sigma eps)``, so ``t = sigma / (1 + sigma)`` (sigma = 1 is t = 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..schedule import GuidanceSchedule
from .toy import ClassMixture

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (x [B,2], sigma [B]) -> E[x0 | x]


def edm_sigmas(num_steps: int = 32, sigma_min: float = 0.002, sigma_max: float = 5.0, rho: float = 7.0) -> Tensor:
    """float64 [num_steps + 1]: EDM's noise levels (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho for i = 0..N-1, then 0."""
    if not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    ramp = torch.arange(num_steps, dtype=torch.float64) / (num_steps - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def sigma_to_t(sigma: Tensor) -> Tensor:
    return sigma / (1 + sigma)


@dataclass
class EDMSampler:
    """Samples class `labels` with the main denoiser, the unconditional and the weak one as guides.

    Heun steps from sigma_max down to 0, an Euler step last (EDM's). Both evaluations of a step use the
    step's guidance weights (those at its current sigma), as the project's flow sampler does. The run
    starts from exact samples of p(x; sigma_max | class), as EDM2's toy does."""

    toy: ClassMixture
    main: Denoiser
    uncond: Optional[Denoiser]
    weak: Optional[Denoiser]
    num_steps: int = 32
    sigma_min: float = 0.002
    sigma_max: float = 5.0
    rho: float = 7.0
    error_unit = "denoiser"  # the per-t analysis reports |D - D*|^2 = t^2 |v - v*|^2

    def initial(self, labels: Tensor, gen: torch.Generator) -> Tensor:
        x0 = self.toy.sample(labels, gen)
        return (x0 + self.sigma_max * torch.randn(x0.shape, dtype=torch.float64, generator=gen)).float()

    @torch.no_grad()
    def __call__(self, schedule: GuidanceSchedule, x: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        """(samples, network evaluations per sample)."""
        sigmas = edm_sigmas(self.num_steps, self.sigma_min, self.sigma_max, self.rho)
        weights = schedule.weights(sigma_to_t(sigmas[:-1]))
        nfe = 0

        def denoise(x: Tensor, sigma: float, w: Tensor) -> Tensor:
            nonlocal nfe
            s = torch.full((x.shape[0],), sigma, dtype=x.dtype)
            uncond = self.uncond(x, s) if w[0] != 0 else None
            weak = self.weak(x, s) if w[1] != 0 else None
            nfe += 1 + (uncond is not None) + (weak is not None)
            return ops.guide(self.main(x, s), uncond, weak, w)

        for i in range(self.num_steps):
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            d = (x - denoise(x, s, weights[i])) / s
            x_next = x + (s_next - s) * d
            if s_next > 0:  # Heun's correction with the slope at the Euler point
                d_next = (x_next - denoise(x_next, s_next, weights[i])) / s_next
                x_next = x + (s_next - s) * (d + d_next) / 2
            x = x_next
        return x, nfe

    def analysis_models(self) -> tuple[nn.Module, nn.Module]:
        """The main/unconditional pair and the weak model as velocity models, for metrics.velocity_analysis."""
        null = self.toy.num_classes
        return DenoiserAsVelocity({null: self.uncond}, self.main, null), DenoiserAsVelocity({}, self.weak, null)

    def analysis_t_grid(self, points: int) -> Tensor:
        """`points` noise levels of EDM's own schedule (the range sampled), as ascending t."""
        return sigma_to_t(edm_sigmas(points, self.sigma_min, self.sigma_max, self.rho)[:-1]).flip(0)


class DenoiserAsVelocity(nn.Module):
    """A denoiser behind the flow velocity interface ``model(x_t, t, labels)``: at sigma = t / (1 - t) and
    x = x_t / (1 - t), v = (x_t - D(x, sigma)) / t. Labels in `by_label` go to that denoiser (a whole
    batch at a time), the rest to `default`; `null` is the label meaning "no class"."""

    def __init__(self, by_label: dict[int, Denoiser], default: Denoiser, null: int):
        super().__init__()
        self.by_label, self.default, self.null = by_label, default, null

    def forward(self, xt: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        first = int(labels[0])
        if not bool((labels == first).all()):
            raise ValueError("DenoiserAsVelocity needs one label per batch")
        denoiser = self.by_label.get(first, self.default)
        keep = (1 - t)[:, None]
        return (xt - denoiser(xt / keep, t / (1 - t))) / t[:, None]

    def null_labels(self, n: int) -> Tensor:
        return torch.full((n,), self.null, dtype=torch.long)
