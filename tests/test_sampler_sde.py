"""sample(solver="euler_maruyama") against our float64 transcription of SiT's euler_maruyama_sampler
(tests/sit_transcription.py): CFG on an interval, AutoGuidance through the weak model (the official
self_guidance mode), no guidance; both paths; several step counts; the RNG contract; the errors.

Tolerance: the op takes its step coefficients (s0, s1, s2) as float32 (docs/ops.md), so each step
rounds them by up to 2^-24 relative against the transcription's float64, and over N steps x moves by
at most about N 2^-24 max|x| where those roundings add up. The rest of both computations is float64.
"""
import math

import pytest
import torch

from helpers import magnitude, make
from sit_transcription import score_from_velocity, sit_euler_maruyama
from sgg_kernels import GuidanceSchedule
from sgg_kernels.batching import GuidanceEngine, Request
from sgg_kernels.reference import guided_step_reference, per_sample
from sgg_kernels.schedule import Segment
from sgg_kernels.sampler import _noisy_step_, sample, timestep_grid
from sgg_kernels.sde import drift_coefficients, step_coefficients

CLASSES, DIM, BATCH, SEED = 3, 6, 4, 5
CFG = dict(cfg_scale=3.0, guidance_low=0.0, guidance_high=0.7)
AG = dict(cfg_scale=2.5, guidance_low=0.0, guidance_high=0.6, self_guidance="True")
SCHEDULES = {  # our schedule for each official setting
    "none": (dict(cfg_scale=1.0), GuidanceSchedule()),
    "cfg": (CFG, GuidanceSchedule.interval(3.0, 0.0, 0.7)),
    "ag": (AG, GuidanceSchedule((Segment("cag", 2.5 - 1, 0.0, 0.6),))),
}


class ClassModel(torch.nn.Module):
    """A class-conditional velocity: the closed-form one of a Gaussian class (mean by label, width s) plus
    a nonlinear term, computed in x's dtype. It reads t in float32, as SiT's timestep embedding does."""

    def __init__(self, seed, width=0.5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mean, self.c = (torch.randn(CLASSES + 1, DIM, generator=g, dtype=torch.float64) for _ in range(2))
        self.s = width

    def forward(self, x, t, y):
        t = t.float().to(x.dtype)[:, None]
        mean, c = self.mean.to(x.dtype)[y], self.c.to(x.dtype)[y]
        k = (t - (1 - t) * self.s**2) / ((1 - t) ** 2 * self.s**2 + t**2)
        return -mean + k * (x - (1 - t) * mean) + 0.2 * c * torch.tanh(x) * t


MODEL, WEAK = ClassModel(0), ClassModel(1, width=0.8)
LABELS = torch.tensor([0, 2, 1, 2])
NULL = torch.full((BATCH,), CLASSES)


def official(num_steps, settings, path, latents=None, model=MODEL, **extra):
    """The transcription as SiT's generate.py runs it, right after torch.manual_seed(SEED); without
    latents, they are drawn first from that stream (as sample(shape=..., generator=...) draws them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        if latents is None:
            latents = torch.randn(BATCH, DIM, dtype=torch.float64)
        return sit_euler_maruyama(model, latents, LABELS, num_steps, path_type=path, model_weak=WEAK,
                                  num_classes=CLASSES, **settings, **extra)


def ours(num_steps, schedule, path, **kwargs):
    kwargs = {"noise": None, "generator": torch.Generator().manual_seed(SEED), **kwargs}
    return sample(kwargs.pop("model", MODEL), LABELS, schedule, null_cond=NULL, weak_model=WEAK,
                  num_steps=num_steps, grid="sit_sde", solver="euler_maruyama", path=path, **kwargs)


def tolerance(num_steps, x):
    return num_steps * 2.0**-24 * x.abs().max().item()


def test_sit_grid_is_the_official_grid_value_for_value():
    for n in (1, 2, 25, 250):
        official_grid = torch.cat([torch.linspace(1.0, 0.04, n, dtype=torch.float64),
                                   torch.tensor([0.0], dtype=torch.float64)])
        assert torch.equal(timestep_grid(n, "sit_sde"), official_grid)


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_drift_is_affine_in_v_as_the_score_from_velocity_gives_it(path):
    g = torch.Generator().manual_seed(0)
    t = torch.cat([torch.tensor([1.0, 0.04, 1e-3]), torch.rand(20, generator=g, dtype=torch.float64)])
    v, x = torch.randn(2, 23, DIM, generator=g, dtype=torch.float64)
    a, b = drift_coefficients(t, path)
    official_drift = v - 0.5 * (2 * t[:, None]) * score_from_velocity(v, x, t, path)
    torch.testing.assert_close(a[:, None] * v + b[:, None] * x, official_drift, rtol=1e-12, atol=1e-12)
    closed_form = {"linear": (2 - t, torch.ones_like(t)),  # d = (2 - t) v + x
                   "cosine": (1 + 2 * t / math.pi / torch.tan(t * math.pi / 2), t)}[path]  # (1 + 2t/pi cot) v + t x
    torch.testing.assert_close((a, b), closed_form, rtol=1e-12, atol=1e-12)


def test_step_table_uses_the_current_t_for_the_noise_and_none_into_zero():
    grid = timestep_grid(5, "sit_sde")
    table = step_coefficients(grid, "linear")
    t, dt = grid[:-1], grid[1:] - grid[:-1]
    assert torch.equal(table[:-1, 2], torch.sqrt(2 * t[:-1] * dt[:-1].abs())) and table[-1, 2] == 0
    torch.testing.assert_close(table[:, :2], torch.stack([1 + dt, (2 - t) * dt], 1), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("path", ["linear", "cosine"])
@pytest.mark.parametrize("mode", list(SCHEDULES))
@pytest.mark.parametrize("num_steps", [1, 2, 10, 50])
def test_matches_the_official_sampler_under_the_same_seed(path, mode, num_steps):
    settings, schedule = SCHEDULES[mode]
    expected = official(num_steps, settings, path)
    out = ours(num_steps, schedule, path, shape=(BATCH, DIM), dtype=torch.float64)
    assert out.x.abs().max() > 1  # a real sample, not a collapse to 0
    torch.testing.assert_close(out.x, expected, rtol=0, atol=tolerance(num_steps, expected))
    assert out.nfe == BATCH * out.weights.shape[0] + BATCH * int((out.weights != 0).sum())


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_float32_latents_as_sit_runs_them(path):
    """SiT keeps x in float64 and calls the model in the latents' dtype: sampling the float64 x with a
    model that casts, from the given latents (so only step noise is drawn), is the official run."""
    latents = torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(1))
    model32 = ClassModel(0).float()

    def cast(x, t, y):
        return model32(x.float(), t, y).double()
    expected = official(25, CFG, path, latents, model=model32)
    out = ours(25, SCHEDULES["cfg"][1], path, model=cast, noise=latents.double())
    torch.testing.assert_close(out.x, expected, rtol=0, atol=tolerance(25, expected))


def test_official_interval_is_closed_at_guidance_low():
    """SiT guides where guidance_low <= t <= guidance_high; our t segments hold on lo < t <= hi. They
    differ only on a step whose t equals guidance_low, which a segment from nextafter(low, 0) includes."""
    low = timestep_grid(10, "sit_sde")[6].item()  # a grid point: the official guides this step
    settings = dict(cfg_scale=3.0, guidance_low=low, guidance_high=1.0)
    expected = official(10, settings, "linear")
    closed = ours(10, GuidanceSchedule.interval(3.0, math.nextafter(low, 0), 1.0), "linear",
                  shape=(BATCH, DIM), dtype=torch.float64)
    torch.testing.assert_close(closed.x, expected, rtol=0, atol=tolerance(10, expected))
    half_open = ours(10, GuidanceSchedule.interval(3.0, low, 1.0), "linear", shape=(BATCH, DIM), dtype=torch.float64)
    assert (half_open.x - expected).abs().max() > 100 * tolerance(10, expected)


def test_each_noisy_step_draws_once_from_the_generator_in_step_order():
    g = torch.Generator().manual_seed(SEED)
    ours(6, GuidanceSchedule(), "linear", shape=(BATCH, DIM), generator=g)
    replay = torch.Generator().manual_seed(SEED)
    for _ in range(1 + 5):  # the starting sample, then steps 1..5; step 6 goes to t = 0 and draws nothing
        torch.randn(BATCH, DIM, generator=replay)
    assert torch.equal(g.get_state(), replay.get_state())


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_float32_sampling_uses_each_draw_at_its_step(path):
    """In float32 the draws are float32 (x's dtype); fed to the transcription in the same order, they give
    its result to float32 accuracy: twice the float64 bound, since x itself is now rounded to float32 at
    each step as well as the coefficients."""
    latents = torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(1))
    replay = torch.Generator().manual_seed(SEED)
    draws = iter([torch.randn(BATCH, DIM, generator=replay).double() for _ in range(24)])
    expected = official(25, CFG, path, latents.double(), randn_like=lambda x: next(draws))
    out = ours(25, SCHEDULES["cfg"][1], path, noise=latents)
    assert out.x.dtype == torch.float32 and next(draws, None) is None
    torch.testing.assert_close(out.x.double(), expected, rtol=0, atol=2 * tolerance(25, expected))


def test_without_a_generator_the_global_stream_is_used_as_sit_uses_it():
    """Each step draws its noise before its evaluations, as SiT does: a model that also draws from the
    global stream (dropout, say) then leaves both runs' noise the same."""
    def drawing_model(x, t, y):
        torch.rand(3)
        return MODEL(x, t, y)
    expected = official(10, CFG, "linear", model=drawing_model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        out = ours(10, SCHEDULES["cfg"][1], "linear", shape=(BATCH, DIM), dtype=torch.float64, generator=None,
                   model=drawing_model)
    torch.testing.assert_close(out.x, expected, rtol=0, atol=tolerance(10, expected))


def test_one_generator_per_sample_makes_each_sample_independent_of_its_batch():
    """Each sample's start and step noise come from its own generator: sampled alone, or in another batch
    order, a sample has the same bits (the model and the op are elementwise per sample)."""
    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]
    seeds, generators = [11, 12, 13, 14], gens([11, 12, 13, 14])
    batch = ours(8, SCHEDULES["ag"][1], "cosine", shape=(BATCH, DIM), generator=generators)
    for b in (2, 0):
        alone = sample(MODEL, LABELS[b:b + 1], SCHEDULES["ag"][1], shape=(1, DIM), generator=gens(seeds[b:b + 1]),
                       weak_model=WEAK, num_steps=8, grid="sit_sde", solver="euler_maruyama", path="cosine")
        assert torch.equal(alone.x[0], batch.x[b])
    for g, replay in zip(generators, gens(seeds)):  # each drew its sample's start and 7 step noises, [DIM] each
        for _ in range(1 + 7):
            torch.randn(DIM, generator=replay)
        assert torch.equal(g.get_state(), replay.get_state())


def counting_model(calls):
    def model(x, t, y):
        calls.append(x.shape[0])
        return MODEL(x, t, y)
    return model


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(path="vp"), ValueError, r"path must be one of \('linear', 'cosine'\) \(SiT's interpolants\), got 'vp'"),
    (dict(generator=[torch.Generator()] * 3), ValueError,
     "generator is a list of 3 generators but the batch has 4 samples"),
    (dict(generator=[torch.Generator(), 7, 8, 9]), TypeError, "generator must be a torch.Generator or a list of them"),
    (dict(null_cond=None), ValueError, r"the schedule uses null_cond \(first at step 1 of 5\) but none was given"),
    (dict(weak_model=None), ValueError, r"the schedule uses weak_model \(first at step 3 of 5\) but none was given"),
])
def test_bad_input_is_refused_before_the_first_evaluation(kwargs, error, message):
    calls = []
    schedule = GuidanceSchedule.sgg(3.0, 2.0, 0.6)
    call = {**dict(shape=(BATCH, DIM), null_cond=NULL, weak_model=WEAK, num_steps=5, grid="sit_sde",
                   solver="euler_maruyama"), **kwargs}
    with pytest.raises(error, match=message):
        sample(counting_model(calls), LABELS, schedule, **call)
    assert calls == []


def test_the_batch_engine_refuses_the_sde_solver_by_name():
    engine = GuidanceEngine(MODEL)
    with pytest.raises(ValueError, match=r"request 'sde': solver='euler_maruyama' is not run by the batch engine"):
        engine.submit(Request(LABELS, GuidanceSchedule(), shape=(BATCH, DIM), solver="euler_maruyama", name="sde"))
    assert engine.idle and engine.steps == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("coefs", ["shared", "per_sample"])
def test_noisy_step_is_one_fused_pass_of_the_affine_update(dtype, coefs):
    """x <- s0 x + s1 guide + s2 noise with step (s0, s1, s2) of shape [3] or [B, 3]: the op's noise operand,
    within a few roundings in the accumulation dtype plus one to x's dtype, on the magnitudes."""
    g = torch.Generator().manual_seed(0)
    x, cond, uncond, weak, noise = (make((5, 3, 4), dtype, gen=g) for _ in range(5))
    weights = torch.rand(5, 2, generator=g)
    step3 = torch.randn((5, 3) if coefs == "per_sample" else (3,), generator=g)
    plain = x.clone()
    torch.ops.sgg.guided_step_(plain, cond, uncond, weak, weights, step3[..., :2].contiguous())
    without = x.clone()
    _noisy_step_(without, cond, uncond, weak, weights, step3, None)
    assert torch.equal(without, plain)  # no noise: exactly the op's guided step
    x_next = x.clone()
    _noisy_step_(x_next, cond, uncond, weak, weights, step3, noise)
    added = per_sample(step3, 2, 3, torch.float64) * noise.double()
    exact = guided_step_reference(x, cond, uncond, weak, weights, step3, noise=noise)
    size = magnitude(x, cond, uncond, weak, weights, step3[..., :2]) + added.abs()
    acc_eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    bound = (8 * acc_eps + torch.finfo(dtype).eps) * size + torch.finfo(dtype).tiny
    assert x_next.dtype == dtype and bool(((x_next.double() - exact).abs() <= bound).all())