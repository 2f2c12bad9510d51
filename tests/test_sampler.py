"""The standalone sampler on Gaussian targets, whose flow-matching velocity is known in closed form.

For data x0 ~ N(mu, s^2) per coordinate on the path x_t = (1 - t) x0 + t eps, the ideal velocity is
v(x, t) = -mu + k_t (x - (1 - t) mu) with k_t = (t - (1 - t) s^2) / ((1 - t)^2 s^2 + t^2), and the
probability-flow ODE maps noise x1 to x0 = mu + s x1. v is linear in mu, so guidance with constant
weights between Gaussians of one width s is again a Gaussian velocity, with the guided mean.
"""
import subprocess
import sys

import pytest
import torch

from sgg_kernels import GuidanceSchedule
from sgg_kernels.sampler import sample, timestep_grid

S_DATA, S_WEAK = 0.5, 0.8


def gaussian_velocity(x, t, mean, s):
    t = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    k = (t - (1 - t) * s**2) / ((1 - t) ** 2 * s**2 + t**2)
    return -mean + k * (x - (1 - t) * mean)


class CountingModel:
    """A Gaussian velocity model that records the batch size of every call."""

    def __init__(self, s):
        self.s, self.batches = s, []

    def __call__(self, x, t, cond):
        assert t.dtype == torch.float32 and t.shape == (x.shape[0],) and t.device == x.device
        self.batches.append(x.shape[0])
        return gaussian_velocity(x, t, cond, self.s)


def problem(batch=3, dim=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, dim, generator=g, dtype=dtype)
    null = torch.zeros_like(cond)
    noise = torch.randn(batch, dim, generator=g, dtype=dtype)
    return cond, null, noise


def plain_loop(velocity, x, grid, solver):
    """Textbook Euler / Heun in float64 (Heun: Euler on the step into t = 0). velocity(x, t, i).

    Like the sampler (by its contract), it gives the model t in float32 and rounds the step size to
    float32, the dtype of the ops' coefficients; everything else is float64.
    """
    x = x.clone()
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    for i in range(len(grid) - 1):
        t, t_next = f32(grid[i].item()), f32(grid[i + 1].item())
        h = f32(grid[i + 1].item() - grid[i].item()).item()
        d = velocity(x, t.expand(x.shape[0]), i)
        if solver == "euler" or t_next == 0:
            x = x + h * d
        else:
            d_next = velocity(x + h * d, t_next.expand(x.shape[0]), i)
            x = x + h / 2 * (d + d_next)
    return x


@pytest.mark.parametrize("grid", ["uniform", "sd3"])
def test_unguided_and_constant_guidance_reach_the_exact_gaussian(grid):
    cond, null, noise = problem()
    lam_cdg, lam_cag = 1.5, 0.5
    # The uncond target has mean 0 (null = 0) and the weak one 0.3 * cond, all of width S_DATA, so the
    # guided target has mean cond + lam_cdg (cond - 0) + lam_cag (cond - 0.3 cond).
    guided_mean = cond * (1 + lam_cdg + lam_cag * 0.7)
    schedule = GuidanceSchedule.cfg(1 + lam_cdg) + GuidanceSchedule.autoguidance(1 + lam_cag)

    def weak(x, t, c):
        return gaussian_velocity(x, t, 0.3 * c, S_DATA)
    errors = {}
    for solver in ("euler", "heun"):
        for steps in (16, 64):
            out = sample(CountingModel(S_DATA), cond, schedule, noise=noise, null_cond=null, weak_model=weak,
                         num_steps=steps, grid=grid, solver=solver)
            errors[solver, steps] = (out.x - (guided_mean + S_DATA * noise)).abs().max().item()
    assert errors["heun", 64] < 1e-3
    assert errors["heun", 64] < errors["heun", 16] / 12  # second order: 4x the steps, ~16x smaller error
    assert errors["euler", 64] < errors["euler", 16] / 3  # first order: ~4x smaller
    assert errors["heun", 16] < errors["euler", 16] / 10


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_segmented_guidance_matches_a_plain_loop(solver, batch_cond_uncond):
    cond, null, noise = problem()
    boundary, lam_cdg, lam_cag = 0.6, 3.5, 1.0  # CFG 4.5 where t > 0.6, AutoGuidance w = 2 below
    schedule = GuidanceSchedule.sgg(1 + lam_cdg, 1 + lam_cag, boundary)
    grid = timestep_grid(20, "sd3")

    def guided(x, t, i):  # the SGG rule (docs/schedules.md), with the step's own noise level deciding the segment
        v_c = gaussian_velocity(x, t, cond, S_DATA)
        if grid[i] > boundary:
            return v_c + lam_cdg * (v_c - gaussian_velocity(x, t, null, S_DATA))
        return v_c + lam_cag * (v_c - gaussian_velocity(x, t, cond, S_WEAK))

    model, weak = CountingModel(S_DATA), CountingModel(S_WEAK)
    out = sample(model, cond, schedule, noise=noise, null_cond=null, weak_model=weak, timesteps=grid,
                 solver=solver, batch_cond_uncond=batch_cond_uncond)
    torch.testing.assert_close(out.x, plain_loop(guided, noise, grid, solver), rtol=1e-10, atol=1e-10)

    cdg_steps = int((grid[:-1] > boundary).sum())
    evaluations_per_step = 2  # cond plus exactly one of uncond / weak at every step
    corrected_steps = 0 if solver == "euler" else 19  # Heun re-evaluates all but the step into t = 0
    assert out.nfe == sum(model.batches) + sum(weak.batches) == 3 * evaluations_per_step * (20 + corrected_steps)
    uncond_calls = 0 if batch_cond_uncond else cdg_steps * (1 if solver == "euler" else 2)  # all before t = 0
    assert len(model.batches) == 20 + corrected_steps + uncond_calls
    assert out.weights.shape == (20, 2) and torch.equal(out.timesteps, grid)


def test_noise_from_generator_and_float32():
    cond, null, _ = problem(dtype=torch.float32)
    def run():
        return sample(CountingModel(S_DATA), cond, GuidanceSchedule.cfg(3.0), shape=(3, 4), null_cond=null,
                      num_steps=8, generator=torch.Generator().manual_seed(5))
    first, second = run(), run()
    assert first.x.dtype == torch.float32 and torch.equal(first.x, second.x)
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    kept = noise.clone()
    same = sample(CountingModel(S_DATA), cond, GuidanceSchedule.cfg(3.0), noise=noise, null_cond=null, num_steps=8)
    assert torch.equal(same.x, first.x) and torch.equal(noise, kept)  # the caller's noise is not written


def test_timestep_grids():
    uniform = timestep_grid(4)
    assert uniform.dtype == torch.float64 and uniform.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    diffusers = pytest.importorskip("diffusers")
    for steps, shift in ((28, 3.0), (7, 1.0), (50, 5.0)):
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(steps)
        assert torch.equal(timestep_grid(steps, "sd3", shift), scheduler.sigmas.double())


def test_errors_name_the_step_and_the_problem():
    cond, null, noise = problem()
    sgg = GuidanceSchedule.sgg(4.5, 2.0, 0.5)
    weak = CountingModel(S_WEAK)
    batched_shape = r"step 1/4 \(t=1, cdg\): the batched cond\+uncond prediction has shape \[6, 2\], expected \[6, 4\]"
    with pytest.raises(ValueError, match=batched_shape):
        sample(lambda x, t, c: x[:, :2], cond, sgg, noise=noise, null_cond=null, weak_model=weak, num_steps=4)
    with pytest.raises(ValueError, match=r"does not fit the grid of 10 steps.*ends at step 14"):
        sample(CountingModel(S_DATA), cond, GuidanceSchedule.from_sd3_args(28), noise=noise, null_cond=null,
               weak_model=weak, num_steps=10)

    def nan_below_half(x, t, c):
        v = weak(x, t, c)
        return v * float("nan") if t[0] <= 0.5 else v
    with pytest.raises(FloatingPointError, match=r"step 3/4 \(t=0.5, cag\): the weak prediction has non-finite"):
        sample(CountingModel(S_DATA), cond, sgg, noise=noise, null_cond=null, weak_model=nan_below_half,
               num_steps=4, check_finite=True)
    with pytest.raises(ValueError, match=r"uses null_cond \(first at step 1 of 4\)"):
        sample(CountingModel(S_DATA), cond, sgg, noise=noise, weak_model=weak, num_steps=4)
    with pytest.raises(ValueError, match="exactly one of noise"):
        sample(CountingModel(S_DATA), cond, sgg, noise=noise, shape=(3, 4), null_cond=null, weak_model=weak)
    with pytest.raises(ValueError, match="decrease strictly"):
        sample(CountingModel(S_DATA), cond, sgg, noise=noise, null_cond=null, weak_model=weak,
               timesteps=[1.0, 0.5, 0.7, 0.0])
    with pytest.raises(ValueError, match="solver must be one of"):
        sample(CountingModel(S_DATA), cond, sgg, noise=noise, solver="rk4")


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(noise=torch.tensor(1.0)), ValueError, r"noise must have a batch dimension \[B, ...\], got a 0-d tensor"),
    (dict(noise=torch.ones(3, 4, dtype=torch.int32)), TypeError, "noise must be a floating-point Tensor"),
    (dict(shape=(3, 4), dtype=torch.int32), TypeError, r"dtype must be one of .*float32.*, got torch.int32"),
    (dict(shape=()), ValueError, r"shape must have a batch dimension \[B, ...\], got \(\)"),
    (dict(noise=torch.ones(3, 4), num_steps=True), ValueError, "num_steps must be a positive int, got True"),
    (dict(noise=torch.ones(3, 4), grid="sd3", shift=float("inf")), ValueError, "shift must be a finite number > 0"),
])
def test_bad_sample_argument_is_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        sample(CountingModel(S_DATA), torch.zeros(3, 4), GuidanceSchedule(), **kwargs)


@pytest.mark.parametrize("args,message", [
    ((4, "sd3", float("inf")), "shift must be a finite number > 0, got inf"),
    ((4, "sd3", float("nan")), "shift must be a finite number > 0, got nan"),
    ((4, "sd3", True), "shift must be a finite number > 0, got True"),
    ((True,), "num_steps must be a positive int, got True"),
    ((4, 3), "grid kind must be one of"),
])
def test_bad_grid_argument_is_named(args, message):
    with pytest.raises(ValueError, match=message):
        timestep_grid(*args)


def test_check_finite_names_the_guided_update_not_the_next_prediction():
    """Strengths inside float32 can still overflow x: the step that overflowed is named, with its weights."""
    cond, null, noise = problem(dtype=torch.float32)
    schedule = GuidanceSchedule.cfg(3e38)  # lam_cdg * (cond - uncond) leaves float32 at step 1
    for solver, where in (("euler", "step 1/4"), ("heun", r"step 1/4 \(Heun predictor\)")):
        with pytest.raises(FloatingPointError, match=rf"{where} \(t=1, cdg\): the guided update made x non-finite "
                                                     r"from finite predictions; weights \(lam_cdg, lam_cag\) = "
                                                     r"\(3e\+38, 0\)"):
            sample(CountingModel(S_DATA), cond, schedule, noise=noise, null_cond=null, num_steps=4, solver=solver,
                   check_finite=True)
    with pytest.raises(FloatingPointError, match="noise has non-finite values"):
        sample(CountingModel(S_DATA), cond, schedule, noise=noise * float("nan"), null_cond=null, num_steps=4,
               check_finite=True)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cond, null, noise = problem(dtype=torch.float32)
    schedule = GuidanceSchedule.sgg(4.5, 2.0, 0.6)
    runs = [sample(CountingModel(S_DATA), cond.to(d), schedule, noise=noise.to(d), null_cond=null.to(d),
                   weak_model=CountingModel(S_WEAK), num_steps=16, solver="heun").x.cpu() for d in ("cpu", "cuda")]
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=1e-5)


def test_importing_the_package_does_not_import_diffusers():
    code = "import sys, sgg_kernels, sgg_kernels.sampler; assert 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
