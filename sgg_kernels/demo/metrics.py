"""Sample quality against the exact toy distribution, and the per-noise-level velocity error.

Sample metrics, per class and overall (classes pooled):
- ``sw``: sliced 2-Wasserstein distance to as many exact samples (lower is better; two exact sets give
  the sampling-noise floor);
- ``logp``: precision, the mean exact log-density of the samples under their class;
- ``cover``: recall, the fraction of the class's mixture components reached, i.e. that are the most
  responsible component of at least one sample lying within their 99% ellipse;
- ``off``: the fraction of samples outside the 99.9% ellipse of their most responsible component.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from .. import ops
from ..schedule import GuidanceSchedule
from .toy import ClassMixture

REACHED_MAHALANOBIS2 = -2 * math.log(0.01)   # chi-square(2) 99% quantile, 9.21
OFF_MAHALANOBIS2 = -2 * math.log(0.001)      # chi-square(2) 99.9% quantile, 13.8


def sliced_wasserstein(a: Tensor, b: Tensor, generator: torch.Generator, projections: int = 128) -> float:
    """Sliced 2-Wasserstein distance between equal-size point sets a, b [N, 2]."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size sets, got {list(a.shape)} and {list(b.shape)}")
    angle = torch.rand(projections, generator=generator, dtype=torch.float64) * math.pi
    directions = torch.stack((angle.cos(), angle.sin()), 1)
    # [projections, N], sorted along the contiguous dim: sorting [N, projections] along dim 0 was 10x slower.
    pa = (directions @ a.to(torch.float64).T).sort(1).values
    pb = (directions @ b.to(torch.float64).T).sort(1).values
    return float((pa - pb).square().mean().sqrt())


def sample_quality(toy: ClassMixture, x: Tensor, labels: Tensor, reference: Tensor,
                   generator: torch.Generator) -> dict[str, dict[str, float]]:
    """{'all' or 'class c': {'sw', 'logp', 'cover', 'off'}} for samples x [N,2] of `labels`, over the
    classes present in `labels` ('cover' of 'all' counts the components of those classes).

    `reference` holds exact samples of the same labels, in the same order.
    """
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError("samples contain non-finite values")
    logp, comp, maha2 = toy.data_fit(x, labels)
    reached = comp[maha2 <= REACHED_MAHALANOBIS2].unique()
    off = maha2 > OFF_MAHALANOBIS2

    def summary(rows: Tensor, components: Tensor) -> dict[str, float]:
        return {
            "sw": sliced_wasserstein(x[rows], reference[rows], generator),
            "logp": float(logp[rows].mean()),
            "cover": float(torch.isin(components, reached).double().mean()),
            "off": float(off[rows].double().mean()),
        }

    classes = labels.unique().tolist()
    out = {"all": summary(torch.arange(x.shape[0]), torch.cat([toy.components_of(c) for c in classes]))}
    for c in classes:
        out[f"class {c}"] = summary((labels == c).nonzero().squeeze(1), toy.components_of(c))
    return out


@dataclass
class VelocityAnalysis:
    """Per-t velocity errors against the ideal class velocity v*, float64 [T] each.

    errors: per method, mean |v_guided - v*|^2, or in unit "denoiser" mean |D_guided - D*|^2 = t^2 |v - v*|^2
    (the x0-prediction error; at fixed t it ranks methods alike, but does not grow as 1/t^2 near the data).
    best_lam / removable: per guidance direction d ('cdg': v_c - v_u, 'cag': v_c - v_w), the constant
    lam >= 0 that minimises mean |v_c + lam d - v*|^2 at that t, and the fraction of the conditional
    model's error it removes. This needs no choice of scale: it says where each family can help at all.
    """

    errors: dict[str, Tensor]
    best_lam: dict[str, Tensor]
    removable: dict[str, Tensor]


def velocity_analysis(toy: ClassMixture, model, weak_model, schedules: Mapping[str, GuidanceSchedule],
                      t_grid: Tensor, points: int, generator: torch.Generator, classes: tuple[int, ...] | None = None,
                      unit: str = "velocity") -> VelocityAnalysis:
    """Velocity errors at x_t ~ p_t(x | c) for c drawn from `classes` (default all), the same points for
    every method.

    A method's guided velocity is the project's op `guide(v_c, v_u, v_w, weights)` with the method's
    (lam_cdg, lam_cag) at that t.
    """
    out = VelocityAnalysis(*({k: torch.empty(len(t_grid), dtype=torch.float64) for k in keys}
                             for keys in (schedules, ("cdg", "cag"), ("cdg", "cag"))))
    if unit not in ("velocity", "denoiser"):
        raise ValueError(f"unit must be 'velocity' or 'denoiser', got {unit!r}")
    classes = torch.arange(toy.num_classes) if classes is None else torch.tensor(classes)
    for i, t in enumerate(t_grid.tolist()):
        labels = classes[torch.randint(0, classes.numel(), (points,), generator=generator)]
        scale = t * t if unit == "denoiser" else 1.0
        x0 = toy.sample(labels, generator)
        eps = torch.randn(points, 2, dtype=torch.float64, generator=generator)
        xt = ((1 - t) * x0 + t * eps).float()
        tt = torch.full((points,), t, dtype=torch.float32)
        ideal = toy.velocity(xt, tt, labels)
        cond = model(xt, tt, labels)
        uncond = model(xt, tt, model.null_labels(points))
        weak = weak_model(xt, tt, labels)
        for name, schedule in schedules.items():
            guided = ops.guide(cond, uncond, weak, schedule.weights([t])[0])
            out.errors[name][i] = scale * (guided.double() - ideal).square().sum(1).mean()
        residual = ideal - cond.double()
        for kind, other in (("cdg", uncond), ("cag", weak)):
            d = (cond - other).double()
            lam = ((residual * d).sum() / d.square().sum().clamp_min(1e-30)).clamp_min(0)
            out.best_lam[kind][i] = lam
            out.removable[kind][i] = 1 - (residual - lam * d).square().sum() / residual.square().sum()
    return out
