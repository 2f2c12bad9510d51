"""A thin reference sampler for flow-matching velocity models with SGG (t = 1 noise to t = 0 data).

    out = sample(model, cond, GuidanceSchedule.sgg(4.5, 2.0, 0.75), shape=(4, 2), null_cond=null,
                 weak_model=weak, num_steps=32, solver="heun", generator=torch.Generator().manual_seed(0))

Models are plain callables ``model(x, t, cond) -> velocity like x`` with ``t`` a float32 tensor [B].
The unconditional prediction is ``model(x, t, null_cond)``, the weak one ``weak_model(x, t, cond)``.
Each step evaluates only what the schedule's plan uses, and combines the predictions and the solver
update in one pass with ``torch.ops.sgg.guided_step_``; its weight and step coefficients are tables
built once on the device, so the loop never synchronises with the host (unless ``check_finite``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils import _pytree as pytree
from tqdm.auto import tqdm

from .reference import SUPPORTED_DTYPES
from .schedule import EvaluationPlan, GuidanceSchedule

GRIDS = ("uniform", "sd3")
SOLVERS = ("euler", "heun")
Model = Callable[[Tensor, Tensor, Any], Tensor]


def timestep_grid(num_steps: int, kind: str = "uniform", shift: float = 3.0) -> Tensor:
    """float64 [num_steps + 1] noise levels from 1 (noise) down to 0.

    'uniform' spaces them evenly; 'sd3' gives diffusers' FlowMatchEulerDiscreteScheduler(shift=shift)
    sigmas value for value (float32 values, as the scheduler stores them, widened to float64).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if kind == "uniform":
        return torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
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
    sigmas = np.linspace(train_steps * 1.0, sigma_min * train_steps, num_steps) / train_steps
    sigmas = (shift * sigmas / (1 + (shift - 1) * sigmas)).astype(np.float32)
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

    `weights` [N, 2] (lam_cdg, lam_cag) and `euler` [N, 2] = (1, t_next - t) are float32 on the
    sampling device; `grid` stays float64 on the host so the loop can branch on it without a sync.
    """

    grid: Tensor
    weights: Tensor
    euler: Tensor
    plan: EvaluationPlan

    @classmethod
    def build(cls, schedule: GuidanceSchedule, grid: Tensor, device: torch.device) -> "GuidanceTables":
        grid = check_grid(grid)
        try:
            weights, plan = schedule.weights(grid[:-1]), schedule.plan(grid[:-1])
        except ValueError as e:
            raise ValueError(f"the guidance schedule does not fit the grid of {grid.numel() - 1} steps "
                             f"(t from {grid[0].item():.4g} to {grid[-1].item():.4g}): {e}") from e
        euler = torch.stack([torch.ones_like(grid[:-1]), grid[1:] - grid[:-1]], dim=1)
        return cls(grid, weights.to(device), euler.to(device, torch.float32), plan)

    @property
    def num_steps(self) -> int:
        return self.grid.numel() - 1

    def active(self, i: int) -> str:
        """The guidance active at step i (0-based), for error messages."""
        kinds = [k for k, on in (("cdg", self.plan.uncond[i]), ("cag", self.plan.weak[i])) if on]
        return "+".join(kinds) or "no guidance"


@dataclass
class SampleOutput:
    x: Tensor           # the final sample
    nfe: int            # network evaluations, counted in samples, over all models
    timesteps: Tensor   # float64 [N + 1], the grid used
    weights: Tensor     # float32 [N, 2], the (lam_cdg, lam_cag) table used


def _concat_conditions(cond: Any, null_cond: Any) -> Any:
    """cond and null_cond stacked along dim 0, leaf by leaf (tensors, or dicts/tuples/lists of them)."""
    def cat(a, b):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return torch.cat([a, b])
        if isinstance(a, Tensor) or isinstance(b, Tensor) or a != b:
            raise TypeError("batch_cond_uncond=True needs cond and null_cond with tensors in the same places "
                            "(non-tensor entries must be equal); pass batch_cond_uncond=False otherwise")
        return a
    return pytree.tree_map(cat, cond, null_cond)


class _Evaluator:
    """Runs the models for one step, checks their outputs and counts evaluations (in samples)."""

    def __init__(self, model, weak_model, cond, null_cond, tables, batch_cond_uncond, check_finite):
        self.model, self.weak_model, self.cond, self.null_cond = model, weak_model, cond, null_cond
        self.tables, self.batch, self.check_finite = tables, batch_cond_uncond, check_finite
        self.cond_and_null = None
        self.nfe = 0

    def _run(self, fn, x: Tensor, t: Tensor, cond: Any, where: str, what: str) -> Tensor:
        out = fn(x, t.expand(x.shape[0]), cond)
        self.nfe += x.shape[0]
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{where}: the {what} prediction has shape {got}, expected {list(x.shape)} (the shape "
                             "of its input x)")
        if out.dtype != x.dtype:
            raise TypeError(f"{where}: the {what} prediction has dtype {out.dtype} but x is {x.dtype}; "
                            "give noise (or dtype) in the model's dtype")
        return out

    def where(self, i: int, t_value: float, label: str = "") -> str:
        return f"step {i + 1}/{self.tables.num_steps}{label} (t={t_value:.4g}, {self.tables.active(i)})"

    def check_update(self, i: int, x: Tensor, t_value: float, label: str = "") -> None:
        """With check_finite, x after step i's guided update must be finite: the predictions were, so a
        non-finite x means the weights times the prediction differences overflowed x's dtype. Naming
        the step here keeps the next step from blaming the model's prediction at the overflowed x."""
        if self.check_finite and not bool(torch.isfinite(x).all()):
            lam_cdg, lam_cag = self.tables.weights[i].tolist()
            raise FloatingPointError(f"{self.where(i, t_value, label)}: the guided update made x non-finite from "
                                     f"finite predictions; weights (lam_cdg, lam_cag) = ({lam_cdg:.4g}, "
                                     f"{lam_cag:.4g}) times the prediction differences overflow {x.dtype}")

    def __call__(self, i: int, x: Tensor, t: Tensor, t_value: float, label: str = ""):
        """(cond, uncond or None, weak or None) at step i's plan, evaluated at (x, t)."""
        need_uncond, need_weak = self.tables.plan.uncond[i], self.tables.plan.weak[i]
        where = self.where(i, t_value, label)
        uncond = weak = None
        if need_uncond and self.batch:
            if self.cond_and_null is None:
                self.cond_and_null = _concat_conditions(self.cond, self.null_cond)
            both = self._run(self.model, torch.cat([x, x]), t, self.cond_and_null, where,
                             "batched cond+uncond")
            cond, uncond = both.chunk(2)  # views: the op reads them in place
        else:
            cond = self._run(self.model, x, t, self.cond, where, "cond")
            if need_uncond:
                uncond = self._run(self.model, x, t, self.null_cond, where, "uncond")
        if need_weak:
            weak = self._run(self.weak_model, x, t, self.cond, where, "weak")
        self.check(where, cond, uncond, weak)
        return cond, uncond, weak

    def check(self, where: str, cond: Tensor, uncond: Optional[Tensor], weak: Optional[Tensor]) -> None:
        if self.check_finite:
            for name, v in (("cond", cond), ("uncond", uncond), ("weak", weak)):
                if v is not None and not bool(torch.isfinite(v).all()):
                    raise FloatingPointError(f"{where}: the {name} prediction has non-finite values")


def _initial_noise(noise, shape, generator, device, dtype) -> Tensor:
    """The starting sample: a copy of noise, or drawn; checked to be a batch in a dtype the ops take."""
    if (noise is None) == (shape is None):
        raise ValueError("give exactly one of noise (the starting sample) or shape (to draw it)")
    dtypes = ", ".join(str(d) for d in SUPPORTED_DTYPES)
    if dtype is not None and dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {dtypes} (the ops' dtypes), got {dtype}")
    if noise is not None:
        if not isinstance(noise, Tensor) or noise.dtype not in SUPPORTED_DTYPES:
            got = noise.dtype if isinstance(noise, Tensor) else type(noise).__name__
            raise TypeError(f"noise must be a floating-point Tensor of {dtypes}, got {got}")
        if noise.dim() < 1:
            raise ValueError("noise must have a batch dimension [B, ...], got a 0-d tensor")
        return noise.detach().clone()  # sampled in place; the caller's tensor is left alone
    if len(tuple(shape)) < 1:
        raise ValueError(f"shape must have a batch dimension [B, ...], got {tuple(shape)}")
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype or torch.float32)


@torch.no_grad()
def sample(model: Model, cond: Any, schedule: GuidanceSchedule, *, noise: Optional[Tensor] = None,
           shape: Optional[Sequence[int]] = None, generator: Optional[torch.Generator] = None,
           null_cond: Any = None, weak_model: Optional[Model] = None,
           timesteps: Union[Tensor, Sequence[float], None] = None, num_steps: int = 28, grid: str = "uniform",
           shift: float = 3.0, solver: str = "euler", batch_cond_uncond: bool = True, progress: bool = False,
           check_finite: bool = False, device: Union[torch.device, str, None] = None,
           dtype: Optional[torch.dtype] = None, branch_group: Any = None) -> SampleOutput:
    """Integrates the guided velocity from t = 1 (noise) to t = 0 with Euler or Heun steps.

    timesteps (a grid [N + 1] from high t towards 0) overrides num_steps/grid/shift. With `shape`,
    the noise is drawn with `generator` on `device` (default: cond's device, else the generator's) in
    `dtype` (default float32). Heun takes an Euler step where t_next = 0, as EDM does.
    `branch_group` (a ProcessGroup of 2 ranks, or a sgg_kernels.distributed.BranchGroup) spreads each
    step's evaluations over the group; every rank passes the same arguments and gets the same x.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if device is None:
        device = cond.device if isinstance(cond, Tensor) else getattr(generator, "device", "cpu")
    x = _initial_noise(noise, shape, generator, device, dtype)
    if check_finite and not bool(torch.isfinite(x).all()):
        raise FloatingPointError("noise has non-finite values")
    grid_t = timestep_grid(num_steps, grid, shift) if timesteps is None else timesteps
    tables = GuidanceTables.build(schedule, grid_t, x.device)
    plan = tables.plan
    for name, given, used in (("null_cond", null_cond, plan.uncond), ("weak_model", weak_model, plan.weak)):
        if given is None and any(used):
            raise ValueError(f"the schedule uses {name} (first at step {used.index(True) + 1} of {tables.num_steps}) "
                             "but none was given")
    if branch_group is None:
        evaluate = _Evaluator(model, weak_model, cond, null_cond, tables, batch_cond_uncond, check_finite)
    else:
        from .distributed import BranchParallelEvaluator  # torch.distributed only when asked for
        evaluate = BranchParallelEvaluator(branch_group, model, weak_model, cond, null_cond, tables, check_finite)
    t_device = tables.grid.to(x.device, torch.float32)
    half = tables.euler * torch.tensor([1.0, 0.5], device=x.device)  # Heun's (1, h / 2)

    for i in tqdm(range(tables.num_steps), disable=not progress, desc="sgg sample"):
        weights, t_value, t_next = tables.weights[i], tables.grid[i].item(), tables.grid[i + 1].item()
        preds = evaluate(i, x, t_device[i], t_value)
        if solver == "euler" or t_next == 0:
            torch.ops.sgg.guided_step_(x, *preds, weights, tables.euler[i])
            evaluate.check_update(i, x, t_value)
            continue
        # Heun: x_next = x + h/2 (d + d'), d' the guided velocity at the Euler point, same weights.
        x_euler = torch.ops.sgg.guided_step(x, *preds, weights, tables.euler[i])
        evaluate.check_update(i, x_euler, t_value, " (Heun predictor)")
        torch.ops.sgg.guided_step_(x, *preds, weights, half[i])
        preds = evaluate(i, x_euler, t_device[i + 1], t_next, " (Heun correction)")
        torch.ops.sgg.guided_step_(x, *preds, weights, half[i])
        evaluate.check_update(i, x, t_value, " (Heun correction)")
    return SampleOutput(x=x, nfe=evaluate.nfe, timesteps=tables.grid, weights=tables.weights)
