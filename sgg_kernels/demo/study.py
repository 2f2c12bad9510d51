"""The synthetic weak-to-strong study: guidance methods x regimes, sampled with the project's sampler.

Every method samples the same noise with the same labels (common random numbers), so differences
between rows are the methods', not the draw's. The "exact" row compares two independent exact sample
sets: its sliced Wasserstein distance is the sampling-noise floor of that column.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..sampler import sample
from ..schedule import GuidanceSchedule
from .metrics import VelocityAnalysis, sample_quality, velocity_analysis
from .models import TrainConfig, load_or_train
from .toy import LeavesConfig, LeavesMixture

HIGH_NOISE = 0.5  # velocity errors are summarised over t > HIGH_NOISE ("hi") and t <= HIGH_NOISE ("lo")


@dataclass(frozen=True)
class Regime:
    description: str
    toy: LeavesConfig
    model: TrainConfig
    weak: TrainConfig   # the CAG weak model: smaller and trained for less
    per_class: int      # samples per class


# Two settings, as in the paper. Training sizes keep `make demo` within minutes on 2 shared cores.
REGIMES = {
    "deep": Regime("2 classes, depth-5 trees, well-fitted model",
                   LeavesConfig(classes=2, depth=5, per_branch=3, thickness=0.1),
                   TrainConfig(width=64, layers=4, steps=6000),
                   TrainConfig(width=32, layers=4, steps=400, label_dropout=0.0), per_class=2048),
    "shallow": Regime("8 classes, depth-2 trees, under-fitted model",
                      LeavesConfig(classes=8, depth=2, per_branch=4),
                      TrainConfig(width=64, layers=4, steps=250),
                      TrainConfig(width=32, layers=4, steps=60, label_dropout=0.0), per_class=512),
}


@dataclass(frozen=True)
class Method:
    name: str
    settings: str
    schedule: GuidanceSchedule
    featured: bool = False  # drawn in the figures

    @property
    def label(self) -> str:
        return f"{self.name} {self.settings}".strip()


# Scales in each community's own convention (CFG s, AutoGuidance w); tau is SGG's CDG/CAG boundary.
SWEEPS = {
    "small": {"scales": (1.5, 3.0), "taus": (0.3, 0.5, 0.7)},
    "full": {"scales": (1.5, 2.0, 3.0), "taus": (0.2, 0.3, 0.5, 0.7, 0.8)},
}
INTERVAL = (0.2, 0.8)  # limited-interval CFG: off at the highest and lowest noise (Kynkaanniemi et al. 2024)


def sweep_methods(scales, taus) -> list[Method]:
    """no guidance; CFG, AutoGuidance and limited-interval CFG at each scale; SGG over scales x scales x taus.

    The featured setting of each method (for the figures) is fixed here, before any result: the
    largest scale, and the middle tau.
    """
    top, mid = max(scales), sorted(taus)[len(taus) // 2]
    lo, hi = INTERVAL
    methods = [Method("none", "", GuidanceSchedule(), featured=True)]
    methods += [Method("cfg", f"s={s}", GuidanceSchedule.cfg(s), s == top) for s in scales]
    methods += [Method("ag", f"w={w}", GuidanceSchedule.autoguidance(w), w == top) for w in scales]
    methods += [Method("interval", f"s={s} t∈({lo},{hi}]", GuidanceSchedule.interval(s, lo, hi), s == top)
                for s in scales]
    methods += [Method("sgg", f"s={s} w={w} tau={tau}", GuidanceSchedule.sgg(s, w, tau),
                       s == top and w == top and tau == mid)
                for s in scales for w in scales for tau in taus]
    return methods


@dataclass
class Row:
    method: str
    settings: str
    nfe: float                              # network evaluations per sample
    quality: dict[str, dict[str, float]]    # metrics.sample_quality
    verr_hi: float = float("nan")           # mean velocity error over t > HIGH_NOISE
    verr_lo: float = float("nan")           # ... and over t <= HIGH_NOISE


@dataclass
class StudyResult:
    toy: LeavesMixture
    labels: Tensor
    rows: list[Row]
    samples: dict[str, Tensor]              # label -> samples, featured methods and "exact"
    t_grid: Tensor
    velocity: VelocityAnalysis              # errors of the featured methods only


def run_study(toy: LeavesMixture, model, weak_model, methods: list[Method], *, per_class: int,
              num_steps: int = 32, t_points: int = 20, points_per_t: int = 1024, seed: int = 0,
              progress: bool = True) -> StudyResult:
    """Samples every method, scores it against exact samples, and measures per-t velocity errors."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(toy.num_classes).repeat_interleave(per_class)
    reference, second = toy.sample(labels, gen), toy.sample(labels, gen)
    noise = torch.randn(labels.shape[0], 2, generator=gen)

    def quality(x):  # same projections for every row
        return sample_quality(toy, x, labels, reference, torch.Generator().manual_seed(seed + 1))

    rows = [Row("exact", "independent exact samples", 0.0, quality(second))]
    samples = {"exact": second.float()}
    for m in tqdm(methods, desc="sample", leave=False, disable=not progress):
        out = sample(model, labels, m.schedule, noise=noise, null_cond=model.null_labels(labels.shape[0]),
                     weak_model=weak_model, num_steps=num_steps)
        rows.append(Row(m.name, m.settings, out.nfe / labels.shape[0], quality(out.x)))
        if m.featured:
            samples[m.label] = out.x

    t_grid = (torch.arange(t_points, dtype=torch.float64) + 0.5) / t_points
    velocity = velocity_analysis(toy, model, weak_model, {m.label: m.schedule for m in methods}, t_grid,
                                 points_per_t, gen)
    high = t_grid > HIGH_NOISE
    for row, m in zip(rows[1:], methods):
        err = velocity.errors[m.label]
        row.verr_hi, row.verr_lo = float(err[high].mean()), float(err[~high].mean())
    velocity.errors = {m.label: velocity.errors[m.label] for m in methods if m.featured}
    return StudyResult(toy, labels, rows, samples, t_grid, velocity)


def run_regime(name: str, sweep: str = "small", *, retrain: bool = False, num_steps: int = 32,
               seed: int = 0, progress: bool = True) -> StudyResult:
    """Trains (or loads) the regime's models and runs the sweep on them."""
    regime = REGIMES[name]
    toy = LeavesMixture(regime.toy)
    model = load_or_train(toy, regime.model, f"{name}-main", retrain, progress)
    weak = load_or_train(toy, regime.weak, f"{name}-weak", retrain, progress)
    return run_study(toy, model, weak, sweep_methods(**SWEEPS[sweep]), per_class=regime.per_class,
                     num_steps=num_steps, seed=seed, progress=progress)
