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

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .evaluators import Evaluator, Model
from .reference import SUPPORTED_DTYPES
from .schedule import GuidanceSchedule
from .tables import GRIDS, GuidanceTables, check_grid, timestep_grid  # noqa: F401  (their documented home)

SOLVERS = ("euler", "heun")


@dataclass
class SampleOutput:
    """What `sample` returns: the sample, what it cost, and the grid and weights it used."""

    x: Tensor           # the final sample
    nfe: int            # network evaluations, counted in samples, over all models
    timesteps: Tensor   # float64 [N + 1], the grid used
    weights: Tensor     # float32 [N, 2], the (lam_cdg, lam_cag) table used


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


def prepare(cond: Any, schedule: GuidanceSchedule, *, noise, shape, generator, null_cond, weak_model, timesteps,
            num_steps, grid, shift, solver, check_finite, device, dtype) -> tuple[Tensor, GuidanceTables]:
    """The starting sample and the schedule's tables for one request, every argument checked before any
    network runs (sample() and the batch engine's submit() share it, so they refuse the same things)."""
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
    return x, tables


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

    Returns a `SampleOutput`: `x` the final sample (a new tensor; `noise` is left alone), `nfe` the
    network evaluations counted in samples over all models, `timesteps` the float64 grid used and
    `weights` the float32 [N, 2] (lam_cdg, lam_cag) table used.
    """
    x, tables = prepare(cond, schedule, noise=noise, shape=shape, generator=generator, null_cond=null_cond,
                        weak_model=weak_model, timesteps=timesteps, num_steps=num_steps, grid=grid, shift=shift,
                        solver=solver, check_finite=check_finite, device=device, dtype=dtype)
    if branch_group is None:
        evaluate = Evaluator(model, weak_model, cond, null_cond, tables, batch_cond_uncond, check_finite)
    else:
        from .distributed import BranchParallelEvaluator  # torch.distributed only when asked for
        evaluate = BranchParallelEvaluator(branch_group, model, weak_model, cond, null_cond, tables, check_finite)

    for i in tqdm(range(tables.num_steps), disable=not progress, desc="sgg sample"):
        weights, t_value, t_next = tables.weights[i], tables.grid[i].item(), tables.grid[i + 1].item()
        preds = evaluate(i, x, tables.t[i], t_value)
        if tables.is_euler_step(i, solver):
            torch.ops.sgg.guided_step_(x, *preds, weights, tables.euler[i])
            evaluate.check_update(i, x, t_value)
            continue
        # Heun: x_next = x + h/2 (d + d'), d' the guided velocity at the Euler point, same weights.
        x_euler = torch.ops.sgg.guided_step(x, *preds, weights, tables.euler[i])
        evaluate.check_update(i, x_euler, t_value, " (Heun predictor)")
        torch.ops.sgg.guided_step_(x, *preds, weights, tables.heun_half[i])
        preds = evaluate(i, x_euler, tables.t[i + 1], t_next, " (Heun correction)")
        torch.ops.sgg.guided_step_(x, *preds, weights, tables.heun_half[i])
        evaluate.check_update(i, x, t_value, " (Heun correction)")
    return SampleOutput(x=x, nfe=evaluate.nfe, timesteps=tables.grid, weights=tables.weights)
