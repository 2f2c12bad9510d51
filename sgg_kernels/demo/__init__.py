"""The paper's synthetic weak-to-strong study on a 2-D toy with an exact density (``python -m sgg_kernels.demo``).

toy: the "leaves" Gaussian mixture, exact density, velocity and denoiser; models: small MLPs, trained and
cached; edm2 and edm_sampler: EDM2's AutoGuidance toy (its tree mixture, log-density models, exact score
matching, EDM's Heun sampler), the calibration regime; metrics: sample quality and per-t error; study:
methods x regimes through the project's op; figures: the PNGs (needs matplotlib, the [demo] extra).
"""
from .edm2 import EDM2TreeConfig, EDM2TreeMixture, LogDensityMLP, ScoreTrainConfig, load_or_train_score_model
from .edm_sampler import EDMSampler, edm_sigmas
from .models import ExactVelocity, TrainConfig, VelocityMLP, load_or_train
from .study import REGIMES, SWEEPS, Method, run_regime, run_sampled_study, run_study, sweep_methods
from .toy import ClassMixture, LeavesConfig, LeavesMixture

__all__ = ["ClassMixture", "EDM2TreeConfig", "EDM2TreeMixture", "EDMSampler", "ExactVelocity", "LeavesConfig",
           "LeavesMixture", "LogDensityMLP", "Method", "REGIMES", "SWEEPS", "ScoreTrainConfig", "TrainConfig",
           "VelocityMLP", "edm_sigmas", "load_or_train", "load_or_train_score_model", "run_regime",
           "run_sampled_study", "run_study", "sweep_methods"]
