"""Noise-level grids and a schedule laid on a grid: the tables every sampler in the package steps with.

`timestep_grid` and `check_grid` make and check the grid (float64, t = 1 noise down to t = 0 data);
`GuidanceTables` holds one schedule's per-step weights, Euler coefficients (and, for the SDE sampler,
its step coefficients) and evaluation plan, built once on the sampling device. The single-request
sampler, the branch-parallel evaluator and the mixed-request batch engine all read these, so they
agree on every value bit for bit.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .schedule import EvaluationPlan, GuidanceSchedule
from .sde import step_coefficients

GRIDS = ("uniform", "sd3", "sit_sde")
# SiT's Euler-Maruyama grid stops its noisy steps here, then takes one noise-free step to t = 0.
SIT_SDE_LAST_T = 0.04


def _check_sd3_shift(shift, sigmas: np.ndarray) -> None:
    """A shift whose float32 grid is not finite and strictly decreasing is refused, naming it: 1e300
    gave NaNs (inf / inf) and 1e-300 an inf first level, which sample() could only call 'not finite'."""
    if not (np.isfinite(sigmas).all() and (sigmas <= 1).all() and (np.diff(sigmas) < 0).all() and sigmas[-1] > 0):
        raise ValueError(f"shift={shift!r} gives an SD3 grid that is not finite and strictly decreasing in (0, 1] "
                         "at float32, the scheduler's precision; use a moderate shift (SD3 uses 3.0)")


def timestep_grid(num_steps: int, kind: str = "uniform", shift: float = 3.0) -> Tensor:
    """float64 [num_steps + 1] noise levels from 1 (noise) down to 0.

    'uniform' spaces them evenly; 'sd3' gives diffusers' FlowMatchEulerDiscreteScheduler(shift=shift)
    sigmas value for value (float32 values, as the scheduler stores them, widened to float64);
    'sit_sde' is SiT's Euler-Maruyama grid, linspace(1, 0.04, num_steps) then 0, value for value.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if kind == "uniform":
        return torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    if kind == "sit_sde":
        return torch.cat([torch.linspace(1.0, SIT_SDE_LAST_T, num_steps, dtype=torch.float64),
                          torch.zeros(1, dtype=torch.float64)])
    if kind != "sd3":
        raise ValueError(f"grid kind must be one of {GRIDS}, got {kind!r}")
    if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
    train_steps = 1000  # the scheduler's num_train_timesteps for SD3/SD3.5
    # The scheduler's constructor shifts its training sigmas in float32 and keeps the smallest as
    # sigma_min; set_timesteps spaces the steps linearly in float64 between sigma_max = 1 and it,
    # shifts them again and stores float32.
    sigma_min = torch.tensor(1.0 / train_steps, dtype=torch.float32)
    sigma_min = float(shift * sigma_min / (1 + (shift - 1) * sigma_min))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sigmas = np.linspace(train_steps * 1.0, sigma_min * train_steps, num_steps) / train_steps
        sigmas = (shift * sigmas / (1 + (shift - 1) * sigmas)).astype(np.float32)
    _check_sd3_shift(shift, sigmas)
    return torch.cat([torch.from_numpy(sigmas).double(), torch.zeros(1, dtype=torch.float64)])


def check_grid(timesteps: Union[Tensor, Sequence[float]]) -> Tensor:
    """The grid as float64 on the host, checked: 1-D, at least 2 points, in [0, 1], strictly decreasing."""
    grid = torch.as_tensor(timesteps, dtype=torch.float64).detach().cpu()
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"timesteps must be a 1-D grid of N + 1 >= 2 noise levels, got shape {list(grid.shape)}")
    if not bool(torch.isfinite(grid).all()) or bool(((grid < 0) | (grid > 1)).any()):
        raise ValueError("timesteps must be finite noise levels in [0, 1] (t = 1 is noise, t = 0 data)")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("timesteps must decrease strictly, from high t (noise) towards 0 (data)")
    return grid


@dataclass(frozen=True)
class GuidanceTables:
    """A schedule laid on a grid: the per-step weights, Euler coefficients and plan, built once.

    `weights` [N, 2] (lam_cdg, lam_cag), `euler` [N, 2] = (1, t_next - t) and `heun_half` [N, 2] =
    (1, (t_next - t) / 2) are float32 on the sampling device, as is `t` [N + 1] (the grid the models
    see); `grid` stays float64 on the host so a loop can branch on it without a sync. `sde` [N, 3]
    (float32, on the device) holds the Euler-Maruyama step (s0, s1, s2) of `sgg_kernels.sde` for the
    interpolant `path` given to `build`, and is None without one.
    """

    grid: Tensor
    weights: Tensor
    euler: Tensor
    heun_half: Tensor
    t: Tensor
    plan: EvaluationPlan
    sde: Optional[Tensor] = None

    @classmethod
    def build(cls, schedule: GuidanceSchedule, grid: Tensor, device: torch.device,
              path: Optional[str] = None) -> "GuidanceTables":
        grid = check_grid(grid)
        try:
            weights, plan = schedule.weights(grid[:-1]), schedule.plan(grid[:-1])
        except ValueError as e:
            raise ValueError(f"the guidance schedule does not fit the grid of {grid.numel() - 1} steps "
                             f"(t from {grid[0].item():.4g} to {grid[-1].item():.4g}): {e}") from e
        euler = torch.stack([torch.ones_like(grid[:-1]), grid[1:] - grid[:-1]], dim=1).to(device, torch.float32)
        heun_half = euler * torch.tensor([1.0, 0.5], device=device)
        sde = None if path is None else step_coefficients(grid, path).to(device, torch.float32)
        return cls(grid, weights.to(device), euler, heun_half, grid.to(device, torch.float32), plan, sde)

    @property
    def num_steps(self) -> int:
        return self.grid.numel() - 1

    def is_euler_step(self, i: int, solver: str) -> bool:
        """Whether step i evaluates once: every step but Heun's, and Heun takes an Euler step into t = 0,
        as EDM does (many velocity models are undefined there)."""
        return solver != "heun" or self.grid[i + 1].item() == 0

    def evaluations_per_sample(self, solver: str) -> int:
        """What sampling one sample with `solver` evaluates: each step's passes, twice on a Heun step."""
        per_step = [1 + u + w for u, w in zip(self.plan.uncond, self.plan.weak)]
        return sum(n * (1 if self.is_euler_step(i, solver) else 2) for i, n in enumerate(per_step))

    def active(self, i: int) -> str:
        """The guidance active at step i (0-based), for error messages."""
        kinds = [k for k, on in (("cdg", self.plan.uncond[i]), ("cag", self.plan.weak[i])) if on]
        return "+".join(kinds) or "no guidance"
