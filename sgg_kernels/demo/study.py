"""The synthetic weak-to-strong study: guidance methods x regimes, sampled through the project's op.

Regimes: the "leaves" toy with flow-matching velocity models and the project's Euler sampler ("deep",
"shallow"), and EDM2's AutoGuidance toy with its log-density models and EDM's Heun sampler ("edm2-tree",
the calibration: see edm2.py and edm_sampler.py).

Every method starts from the same initial points with the same labels (common random numbers), so
differences between rows are the methods', not the draw's. The "exact" row compares two independent exact
sample sets: its sliced Wasserstein distance is the sampling-noise floor of that column.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..sampler import sample
from ..schedule import GuidanceSchedule
from .edm2 import EDM2TreeConfig, EDM2TreeMixture, ScoreTrainConfig, load_or_train_score_model
from .edm_sampler import EDMSampler
from .metrics import VelocityAnalysis, sample_quality, velocity_analysis
from .models import TrainConfig, load_or_train
from .toy import ClassMixture, LeavesConfig, LeavesMixture

HIGH_NOISE = 0.5  # velocity errors are summarised over t > HIGH_NOISE ("hi") and t <= HIGH_NOISE ("lo")


@dataclass(frozen=True)
class Regime:
    description: str
    toy: LeavesConfig
    model: TrainConfig
    weak: TrainConfig   # the CAG weak model: smaller and trained for less
    per_class: int      # samples per class


@dataclass(frozen=True)
class EDM2Regime:
    """EDM2's toy recipe: main model, AutoGuidance guide (smaller, shorter) and, for CFG, an unconditional
    guide of the guide's size; only class `classes` is sampled (EDM2 samples its class A)."""

    description: str
    toy: EDM2TreeConfig
    main: ScoreTrainConfig
    weak: ScoreTrainConfig
    uncond: ScoreTrainConfig
    per_class: int
    classes: tuple[int, ...] = (0,)
    guidance_weights: tuple[float, ...] = (3.0, 4.0)  # EDM2's AG w and CFG w, added to the sweep's scales


# The paper's two settings, and EDM2's published toy as the calibration. Training sizes keep `make demo`
# within minutes on 2 shared cores.
REGIMES = {
    "deep": Regime("2 classes, depth-5 trees, well-fitted model",
                   LeavesConfig(classes=2, depth=5, per_branch=3, thickness=0.1),
                   TrainConfig(width=64, layers=4, steps=6000),
                   TrainConfig(width=32, layers=4, steps=400, label_dropout=0.0), per_class=2048),
    "shallow": Regime("8 classes, depth-2 trees, under-fitted model",
                      LeavesConfig(classes=8, depth=2, per_branch=4),
                      TrainConfig(width=64, layers=4, steps=250),
                      TrainConfig(width=32, layers=4, steps=60, label_dropout=0.0), per_class=512),
    # EDM2's recipe but for the main model's batch, 2048 instead of 4096: at 4096 the three regimes took
    # 302 s of CPU time (one thread), 157 s of it the main model's 4096 steps.
    "edm2-tree": EDM2Regime("EDM2's AutoGuidance toy, its recipe (class A; Heun, 32 steps)", EDM2TreeConfig(),
                            ScoreTrainConfig(cls=0, width=64, iterations=4096, batch=2048),
                            ScoreTrainConfig(cls=0, width=32, iterations=512),
                            ScoreTrainConfig(cls=-1, width=32, iterations=512), per_class=4096),
}


@dataclass(frozen=True)
class Method:
    name: str
    settings: str
    schedule: GuidanceSchedule
    featured: bool = False  # the largest-scale setting, drawn in the figures beside the best-scoring one

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
    verr_hi: float = float("nan")           # mean velocity (or denoiser) error over t > HIGH_NOISE
    verr_lo: float = float("nan")           # ... and over t <= HIGH_NOISE
    featured: bool = False                  # the method's largest-scale setting (Method.featured)

    @property
    def label(self) -> str:
        return f"{self.method} {self.settings}".strip()


@dataclass
class StudyResult:
    toy: ClassMixture
    labels: Tensor
    rows: list[Row]
    samples: dict[str, Tensor]              # method label (Method.label) or "exact" -> samples
    t_grid: Tensor
    velocity: VelocityAnalysis              # per-t errors of every method
    error_unit: str = "velocity"            # of verr_hi/lo and the per-t errors: "velocity" or "denoiser"


@dataclass
class FlowSampler:
    """The project's sampler (sgg_kernels.sampler.sample, Euler) on velocity models, from Gaussian noise."""

    model: object
    weak_model: object
    num_steps: int = 32
    error_unit = "velocity"

    def initial(self, labels: Tensor, gen: torch.Generator) -> Tensor:
        return torch.randn(labels.shape[0], 2, generator=gen)

    def __call__(self, schedule: GuidanceSchedule, x: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        out = sample(self.model, labels, schedule, noise=x, null_cond=self.model.null_labels(labels.shape[0]),
                     weak_model=self.weak_model, num_steps=self.num_steps)
        return out.x, out.nfe / labels.shape[0]

    def analysis_models(self):
        return self.model, self.weak_model

    def analysis_t_grid(self, points: int) -> Tensor:
        return (torch.arange(points, dtype=torch.float64) + 0.5) / points


def run_study(toy: ClassMixture, model, weak_model, methods: list[Method], *, per_class: int,
              num_steps: int = 32, **kwargs) -> StudyResult:
    """run_sampled_study with the project's flow sampler on velocity models `model` and `weak_model`."""
    return run_sampled_study(toy, FlowSampler(model, weak_model, num_steps), methods, per_class=per_class, **kwargs)


def run_sampled_study(toy: ClassMixture, sampler, methods: list[Method], *, per_class: int,
                      classes: tuple[int, ...] | None = None, t_points: int = 20, points_per_t: int = 1024,
                      seed: int = 0, progress: bool = True) -> StudyResult:
    """Samples every method, scores it against exact samples, and measures per-t errors (of `classes`,
    default all)."""
    gen = torch.Generator().manual_seed(seed)
    classes = tuple(range(toy.num_classes)) if classes is None else classes
    labels = torch.tensor(classes).repeat_interleave(per_class)
    reference, second = toy.sample(labels, gen), toy.sample(labels, gen)
    initial = sampler.initial(labels, gen)

    def quality(x):  # same projections for every row
        return sample_quality(toy, x, labels, reference, torch.Generator().manual_seed(seed + 1))

    rows = [Row("exact", "independent exact samples", 0.0, quality(second))]
    samples = {"exact": second.float()}
    for m in tqdm(methods, desc="sample", leave=False, disable=not progress):
        x, nfe = sampler(m.schedule, initial, labels)
        rows.append(Row(m.name, m.settings, nfe, quality(x), featured=m.featured))
        samples[m.label] = x

    t_grid = sampler.analysis_t_grid(t_points)
    velocity = velocity_analysis(toy, *sampler.analysis_models(), {m.label: m.schedule for m in methods}, t_grid,
                                 points_per_t, gen, classes=classes, unit=sampler.error_unit)
    high = t_grid > HIGH_NOISE
    for row, m in zip(rows[1:], methods):
        err = velocity.errors[m.label]
        row.verr_hi, row.verr_lo = float(err[high].mean()), float(err[~high].mean())
    return StudyResult(toy, labels, rows, samples, t_grid, velocity, sampler.error_unit)


def regime_methods(name: str, sweep: str) -> list[Method]:
    regime, scales = REGIMES[name], SWEEPS[sweep]["scales"]
    if isinstance(regime, EDM2Regime):
        scales = tuple(sorted(set(scales) | set(regime.guidance_weights)))
    return sweep_methods(scales, SWEEPS[sweep]["taus"])


def run_regime(name: str, sweep: str = "small", *, retrain: bool = False, num_steps: int = 32,
               seed: int = 0, progress: bool = True) -> StudyResult:
    """Trains (or loads) the regime's models and runs the sweep on them."""
    regime, methods = REGIMES[name], regime_methods(name, sweep)
    if isinstance(regime, EDM2Regime):
        toy = EDM2TreeMixture(regime.toy)
        main, weak, uncond = (load_or_train_score_model(toy, config, f"{name}-{role}", retrain, progress).denoiser
                              for role, config in (("main", regime.main), ("weak", regime.weak),
                                                   ("uncond", regime.uncond)))
        sampler = EDMSampler(toy, main, uncond, weak, num_steps)
        return run_sampled_study(toy, sampler, methods, per_class=regime.per_class, classes=regime.classes,
                                 seed=seed, progress=progress)
    toy = LeavesMixture(regime.toy)
    model = load_or_train(toy, regime.model, f"{name}-main", retrain, progress)
    weak = load_or_train(toy, regime.weak, f"{name}-weak", retrain, progress)
    return run_study(toy, model, weak, methods, per_class=regime.per_class, num_steps=num_steps, seed=seed,
                     progress=progress)
