"""The paper's synthetic weak-to-strong study on a 2-D toy with an exact density (``python -m sgg_kernels.demo``).

toy: the "leaves" Gaussian mixture, exact density and velocity; models: small MLPs, trained and cached;
metrics: sample quality and per-t velocity error; study: methods x regimes through the project's sampler;
figures: the PNGs (needs matplotlib, the [demo] extra).
"""
from .models import ExactVelocity, TrainConfig, VelocityMLP, load_or_train
from .study import REGIMES, SWEEPS, Method, run_regime, run_study, sweep_methods
from .toy import LeavesConfig, LeavesMixture

__all__ = ["ExactVelocity", "LeavesConfig", "LeavesMixture", "Method", "REGIMES", "SWEEPS", "TrainConfig",
           "VelocityMLP", "load_or_train", "run_regime", "run_study", "sweep_methods"]
