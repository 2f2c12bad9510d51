"""A thin reference sampler for flow-matching velocity models with SGG (t = 1 noise to t = 0 data).

    out = sample(model, cond, GuidanceSchedule.sgg(4.5, 2.0, 0.75), shape=(4, 2), null_cond=null,
                 weak_model=weak, num_steps=32, solver="heun", generator=torch.Generator().manual_seed(0))

Models are plain callables ``model(x, t, cond) -> velocity like x`` with ``t`` a float32 tensor [B].
The unconditional prediction is ``model(x, t, null_cond)``, the weak one ``weak_model(x, t, cond)``.
Each step evaluates only what the schedule's plan uses, and combines the predictions and the solver
update in one pass with ``torch.ops.sgg.guided_step_``; its weight and step coefficients are tables
built once on the device, so the loop never synchronises with the host (unless ``check_finite``).
``solver="euler_maruyama"`` is SiT's stochastic sampler (``sgg_kernels.sde``, docs/sampler.md).
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
from .sde import PATHS, check_path  # noqa: F401  (PATHS: documented here with the solvers)
from .tables import GRIDS, GuidanceTables, check_grid, timestep_grid  # noqa: F401  (their documented home)

SOLVERS = ("euler", "heun", "euler_maruyama")
Generators = Union[torch.Generator, Sequence[torch.Generator], None]


@dataclass
class SampleOutput:
    """What `sample` returns: the sample, what it cost, and the grid and weights it used."""

    x: Tensor           # the final sample
    nfe: int            # network evaluations, counted in samples, over all models
    timesteps: Tensor   # float64 [N + 1], the grid used
    weights: Tensor     # float32 [N, 2], the (lam_cdg, lam_cag) table used


def draw_noise(shape: Sequence[int], generator: Generators, device, dtype: torch.dtype) -> Tensor:
    """torch.randn(shape) from `generator`; from a sequence of generators (one per sample), sample b's
    rows are torch.randn(shape[1:]) from the b-th, drawn on its device and moved to `device`, so that
    a sample's noise does not depend on what else shares its batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype)
                        for g in generator]).to(device)


def _check_generator(generator: Generators, batch: int) -> None:
    """None, a torch.Generator, or one torch.Generator per sample."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"generator must be a torch.Generator or a list of them (one per sample), got "
                        f"{type(generator).__name__}")
    if len(generator) != batch:
        raise ValueError(f"generator is a list of {len(generator)} generators but the batch has {batch} samples "
                         "(one generator per sample)")


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
        _check_generator(generator, noise.shape[0])
        return noise.detach().clone()  # sampled in place; the caller's tensor is left alone
    if len(tuple(shape)) < 1:
        raise ValueError(f"shape must have a batch dimension [B, ...], got {tuple(shape)}")
    _check_generator(generator, tuple(shape)[0])
    return draw_noise(shape, generator, device, dtype or torch.float32)


def _default_device(cond: Any, generator: Generators):
    """cond's device, else the generator's (the first one's, for one per sample), else the CPU."""
    if isinstance(cond, Tensor):
        return cond.device
    if isinstance(generator, (list, tuple)) and generator:
        generator = generator[0]
    return getattr(generator, "device", "cpu")


def prepare(cond: Any, schedule: GuidanceSchedule, *, noise, shape, generator, null_cond, weak_model, timesteps,
            num_steps, grid, shift, solver, check_finite, device, dtype,
            path: str = "linear") -> tuple[Tensor, GuidanceTables]:
    """The starting sample and the schedule's tables for one request, every argument checked before any
    network runs (sample() and the batch engine's submit() share it, so they refuse the same things)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    check_path(path)
    x = _initial_noise(noise, shape, generator, _default_device(cond, generator) if device is None else device, dtype)
    if check_finite and not bool(torch.isfinite(x).all()):
        raise FloatingPointError("noise has non-finite values")
    grid_t = timestep_grid(num_steps, grid, shift) if timesteps is None else timesteps
    tables = GuidanceTables.build(schedule, grid_t, x.device, path if solver == "euler_maruyama" else None)
    plan = tables.plan
    for name, given, used in (("null_cond", null_cond, plan.uncond), ("weak_model", weak_model, plan.weak)):
        if given is None and any(used):
            raise ValueError(f"the schedule uses {name} (first at step {used.index(True) + 1} of {tables.num_steps}) "
                             "but none was given")
    return x, tables


def _noisy_step_(x: Tensor, cond: Tensor, uncond: Optional[Tensor], weak: Optional[Tensor], weights: Tensor,
                 step3: Tensor, noise: Optional[Tensor]) -> None:
    """x <- s0 x + s1 guide + s2 noise in place, in one pass (the op's noise operand), step3 = (s0, s1, s2)
    float32 [3] or [B, 3]. Without noise (the step into t = 0), the plain step with (s0, s1)."""
    if noise is None:
        torch.ops.sgg.guided_step_(x, cond, uncond, weak, weights, step3[..., :2].contiguous())
    else:
        torch.ops.sgg.guided_step_(x, cond, uncond, weak, weights, step3, noise)


@torch.no_grad()
def sample(model: Model, cond: Any, schedule: GuidanceSchedule, *, noise: Optional[Tensor] = None,
           shape: Optional[Sequence[int]] = None, generator: Generators = None,
           null_cond: Any = None, weak_model: Optional[Model] = None,
           timesteps: Union[Tensor, Sequence[float], None] = None, num_steps: int = 28, grid: str = "uniform",
           shift: float = 3.0, solver: str = "euler", path: str = "linear", batch_cond_uncond: bool = True,
           progress: bool = False, check_finite: bool = False, device: Union[torch.device, str, None] = None,
           dtype: Optional[torch.dtype] = None, branch_group: Any = None) -> SampleOutput:
    """Integrates the guided velocity from t = 1 (noise) to t = 0 with Euler, Heun or Euler-Maruyama steps.

    timesteps (a grid [N + 1] from high t towards 0) overrides num_steps/grid/shift. With `shape`,
    the noise is drawn with `generator` on `device` (default: cond's device, else the generator's) in
    `dtype` (default float32). Heun takes an Euler step where t_next = 0, as EDM does.
    `solver="euler_maruyama"` is SiT's SDE sampler for the interpolant `path` ("linear" or "cosine";
    the ODE solvers do not use it): each step into t > 0 first draws
    torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator); the step into t = 0
    adds no noise. `generator` may also be a list of one generator per sample, each drawing its
    sample's noise (torch.randn(x.shape[1:]) on its own device, then moved to x's).
    `branch_group` (a ProcessGroup of 2 ranks, or a sgg_kernels.distributed.BranchGroup) spreads each
    step's evaluations over the group; every rank passes the same arguments (generators seeded alike)
    and gets the same x.

    Returns a `SampleOutput`: `x` the final sample (a new tensor; `noise` is left alone), `nfe` the
    network evaluations counted in samples over all models, `timesteps` the float64 grid used and
    `weights` the float32 [N, 2] (lam_cdg, lam_cag) table used.
    """
    x, tables = prepare(cond, schedule, noise=noise, shape=shape, generator=generator, null_cond=null_cond,
                        weak_model=weak_model, timesteps=timesteps, num_steps=num_steps, grid=grid, shift=shift,
                        solver=solver, check_finite=check_finite, device=device, dtype=dtype, path=path)
    if branch_group is None:
        evaluate = Evaluator(model, weak_model, cond, null_cond, tables, batch_cond_uncond, check_finite)
    else:
        from .distributed import BranchParallelEvaluator  # torch.distributed only when asked for
        evaluate = BranchParallelEvaluator(branch_group, model, weak_model, cond, null_cond, tables, check_finite)

    for i in tqdm(range(tables.num_steps), disable=not progress, desc="sgg sample"):
        weights, t_value, t_next = tables.weights[i], tables.grid[i].item(), tables.grid[i + 1].item()
        if tables.sde is not None:
            # Drawn before the step's evaluations, as SiT's sampler does, so that a model drawing from
            # the global generator too (generator=None) leaves the two streams in the same order.
            step_noise = draw_noise(x.shape, generator, x.device, x.dtype) if t_next > 0 else None
            _noisy_step_(x, *evaluate(i, x, tables.t[i], t_value), weights, tables.sde[i], step_noise)
            evaluate.check_update(i, x, t_value)
            continue
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
