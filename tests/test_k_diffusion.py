"""SGGDenoiser under k-diffusion's own samplers (Euler, Heun, DPM++ 2M, Euler ancestral) on tiny random
denoisers: CFG alone against k-diffusion's usual CFG wrapper, SGG against transcribed loops, network
evaluations against the schedule's plan, and the skip-layer weak pass on a tiny SD3 against SD3's own
`skip_layers`."""
import importlib.util

import pytest
import torch
from torch import nn

if importlib.util.find_spec("k_diffusion") is None:
    pytest.skip("needs k-diffusion (pip install .[k-diffusion])", allow_module_level=True)

from sgg_kernels import GuidanceSchedule  # noqa: E402
from sgg_kernels.integrations.k_diffusion import SGGDenoiser, import_k_diffusion_sampling  # noqa: E402

K = import_k_diffusion_sampling()
SAMPLERS = {"euler": K.sample_euler, "heun": K.sample_heun, "dpmpp_2m": K.sample_dpmpp_2m,
            "euler_ancestral": K.sample_euler_ancestral}
CFG, W, BOUNDARY = 4.0, 2.5, 0.5   # SGG: CFG 4.0 where t > 0.5 (sigma > 1), weak-model guidance 2.5 below


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyDenoiser(nn.Module):
    """A random EDM-preconditioned denoiser D(x, sigma, cond) in k-diffusion's calling convention."""

    def __init__(self, seed, width=8):
        super().__init__()
        torch.manual_seed(seed)
        self.inp, self.out = nn.Conv2d(2, width, 3, padding=1), nn.Conv2d(width, 2, 3, padding=1)
        self.embed_cond, self.embed_noise = nn.Linear(4, width), nn.Linear(1, width)

    def forward(self, x, sigma, cond):
        s = sigma.reshape(-1, 1, 1, 1)
        c_in, c_skip, c_out = (s ** 2 + 1).rsqrt(), 1 / (s ** 2 + 1), s * (s ** 2 + 1).rsqrt()
        h = self.inp(x * c_in) + (self.embed_cond(cond) + self.embed_noise(sigma.log()[:, None] / 4))[:, :, None, None]
        return c_skip * x + c_out * self.out(torch.tanh(h))


class Counted:
    """Counts a module's sample-evaluations (batch rows over all its calls)."""

    def __init__(self, module):
        self.samples = 0
        self.handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.samples += (args[0] if args else kwargs["hidden_states"]).shape[0]


@pytest.fixture(scope="module")
def case():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    noise = torch.randn(2, 2, 6, 6, generator=g)
    sigmas = K.get_sigmas_karras(8, sigma_min=0.02, sigma_max=20.0)
    return TinyDenoiser(0), TinyDenoiser(1, width=4), dict(cond=cond, uncond=uncond), noise, sigmas


def usual_cfg_wrapper(model, scale):
    """k-diffusion's CFG denoiser wrapper as its users write it, transcribed: one batched call on
    (uncond, cond), then uncond + (cond - uncond) * scale."""
    def denoise(x, sigma, cond, uncond):
        d_uncond, d_cond = model(torch.cat([x] * 2), torch.cat([sigma] * 2), cond=torch.cat([uncond, cond])).chunk(2)
        return d_uncond + (d_cond - d_uncond) * scale
    return denoise


def sgg_by_hand(model, weak):
    """The SGG denoiser written out: CFG where t = sigma / (1 + sigma) > BOUNDARY, weak-model guidance below."""
    def denoise(x, sigma, cond, uncond):
        t = float(sigma[0]) / (1 + float(sigma[0]))
        d_cond = model(x, sigma, cond=cond)
        if t > BOUNDARY:
            d_uncond = model(x, sigma, cond=uncond)
            return d_uncond + CFG * (d_cond - d_uncond)
        d_weak = weak(x, sigma, cond=cond)
        return d_weak + W * (d_cond - d_weak)
    return denoise


def run(sampler, denoiser, noise, sigmas, extra_args):
    torch.manual_seed(7)  # Euler ancestral's noise: the same draws for both denoisers
    with torch.no_grad():
        return SAMPLERS[sampler](denoiser, noise * sigmas[0], sigmas, extra_args=extra_args, disable=True)


def evaluated_sigmas(sampler, sigmas):
    """Where each sampler calls the denoiser (sigmas ends with 0): every sigma but the last, and for
    Heun also the next sigma of each step whose next sigma is not 0."""
    return torch.cat([sigmas[:-1], sigmas[1:-1]]) if sampler == "heun" else sigmas[:-1]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cfg_alone_equals_the_usual_cfg_wrapper(sampler, case):
    model, _, extra, noise, sigmas = case
    expected = run(sampler, usual_cfg_wrapper(model, CFG), noise, sigmas, extra)
    counted = Counted(model)
    got = run(sampler, SGGDenoiser(model, GuidanceSchedule.cfg(CFG)), noise, sigmas, extra)
    counted.handle.remove()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert counted.samples == 2 * len(noise) * len(evaluated_sigmas(sampler, sigmas))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sgg_runs_only_the_plans_evaluations_in_every_sampler(sampler, case):
    model, weak, extra, noise, sigmas = case
    schedule = GuidanceSchedule.sgg(CFG, W, BOUNDARY)
    expected = run(sampler, sgg_by_hand(model, weak), noise, sigmas, extra)
    counted, counted_weak = Counted(model), Counted(weak)
    got = run(sampler, SGGDenoiser(model, schedule, weak_model=weak), noise, sigmas, extra)
    counted.handle.remove(), counted_weak.handle.remove()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    ts = evaluated_sigmas(sampler, sigmas).double()
    plan = schedule.plan(ts / (1 + ts))
    assert 0 < sum(plan.uncond) < len(ts) and 0 < sum(plan.weak) < len(ts)  # both segments are used
    assert counted.samples == len(noise) * (len(ts) + sum(plan.uncond))
    assert counted_weak.samples == len(noise) * sum(plan.weak)


@torch.no_grad()
def transcribed_loop(denoise, x, sigmas, heun):
    """k-diffusion's Euler and Heun loops without churn, written out."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - denoise(x, s.expand(len(x)))) / s
        if not heun or s_next == 0:
            x = x + d * (s_next - s)
        else:
            x_2 = x + d * (s_next - s)
            d_2 = (x_2 - denoise(x_2, s_next.expand(len(x)))) / s_next
            x = x + (d + d_2) / 2 * (s_next - s)
    return x


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_sgg_equals_a_transcribed_loop(sampler, case):
    model, weak, extra, noise, sigmas = case
    by_hand = sgg_by_hand(model, weak)
    expected = transcribed_loop(lambda x, s: by_hand(x, s, **extra), noise * sigmas[0], sigmas, sampler == "heun")
    got = run(sampler, SGGDenoiser(model, GuidanceSchedule.sgg(CFG, W, BOUNDARY), weak_model=weak), noise, sigmas,
              extra)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_samples_at_different_sigmas_take_their_own_weights(case):
    model, weak, extra, noise, _ = case
    guided = SGGDenoiser(model, GuidanceSchedule.sgg(CFG, W, BOUNDARY), weak_model=weak)
    sigma = torch.tensor([1.05, 0.95])  # t = 0.512 (CFG) and 0.487 (weak-model guidance): t = sigma / (1 + sigma)
    got = guided(noise, sigma, **extra)
    by_hand = sgg_by_hand(model, weak)
    for k in range(2):
        one = {name: v[k:k + 1] for name, v in extra.items()}
        torch.testing.assert_close(got[k:k + 1], by_hand(noise[k:k + 1], sigma[k:k + 1], **one), rtol=1e-5, atol=1e-5)


# Skip-layer weak pass: a tiny SD3 as a flow model (sigma = t) through a k-diffusion denoiser wrapper.
class FlowDenoiser(nn.Module):
    """denoised = x - sigma * v for a flow-matching transformer; cond = (prompt embeds, pooled)."""

    def __init__(self, transformer, skip_layers=None):
        super().__init__()
        self.inner_model, self.skip_layers = transformer, skip_layers

    def forward(self, x, sigma, cond):
        extra = {} if self.skip_layers is None else {"skip_layers": self.skip_layers}
        v = self.inner_model(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=cond[0],
                             pooled_projections=cond[1], return_dict=False, **extra)[0]
        return x - sigma.reshape(-1, 1, 1, 1) * v


@pytest.fixture(scope="module")
def sd3():
    pytest.importorskip("diffusers")
    from diffusers_tiny import initial_latents, sd3_embeds, tiny_sd3_transformer
    e = sd3_embeds()
    cond = (e["prompt_embeds"], e["pooled_prompt_embeds"])
    uncond = (e["negative_prompt_embeds"], e["negative_pooled_prompt_embeds"])
    return tiny_sd3_transformer(), dict(cond=cond, uncond=uncond), initial_latents()


def assert_no_hooks(model):
    """No call or forward override is left on the model or any of its submodules."""
    assert [name for name, m in model.named_modules() if {"forward", "_call_impl"} & m.__dict__.keys()] == []


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_skip_layers_equal_sd3s_own_skip_layers(sampler, sd3):
    transformer, extra, noise = sd3
    sigmas = torch.linspace(1, 0, 9)  # flow time: sigma = t
    schedule = GuidanceSchedule.sgg(CFG, W, BOUNDARY)
    plain, skipped = FlowDenoiser(transformer), FlowDenoiser(transformer, skip_layers=[7, 8, 9])

    def by_hand(x, sigma, cond, uncond):
        if float(sigma[0]) > BOUNDARY:
            d_cond, d_uncond = plain(x, sigma, cond), plain(x, sigma, uncond)
            return d_uncond + CFG * (d_cond - d_uncond)
        d_cond, d_weak = plain(x, sigma, cond), skipped(x, sigma, cond)
        return d_weak + W * (d_cond - d_weak)
    expected = run(sampler, by_hand, noise, sigmas, extra)
    guided = SGGDenoiser(plain, schedule, skip_layers=[7, 8, 9], sigma_to_t="flow")
    got = run(sampler, guided, noise, sigmas, extra)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, run(sampler, SGGDenoiser(plain, GuidanceSchedule.cfg(CFG), sigma_to_t="flow"),
                                       noise, sigmas, extra))  # the weak segment changes the result
    assert_no_hooks(transformer)


def test_hooks_are_removed_when_the_weak_pass_raises(sd3):
    transformer, extra, noise = sd3
    guided = SGGDenoiser(FlowDenoiser(transformer), GuidanceSchedule.autoguidance(W), skip_layers=[8],
                         sigma_to_t="flow")

    def fail_while_skipping(module, args, kwargs):  # block 0 runs in every pass; fail in the weak one
        if "forward" in transformer.transformer_blocks[8].__dict__:
            raise RuntimeError("boom in the weak pass")
    handle = transformer.transformer_blocks[0].register_forward_pre_hook(fail_while_skipping, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="boom in the weak pass"):
            run("euler", guided, noise, torch.linspace(1, 0, 3), extra)
    finally:
        handle.remove()
    assert_no_hooks(transformer)


# Bad settings raise before any evaluation, naming the argument.
def test_bad_settings_are_refused(case):
    model, weak, extra, noise, _ = case
    steps = GuidanceSchedule.from_sd3_args(4, 4.5, 1, 2, True, 3.0, 3, 4)
    with pytest.raises(ValueError, match="schedule: a k-diffusion denoiser sees sigmas, not step numbers"):
        SGGDenoiser(model, steps, weak_model=weak)
    with pytest.raises(ValueError, match="weak pass needs skip_layers"):
        SGGDenoiser(model, GuidanceSchedule.autoguidance(2.0))
    with pytest.raises(ValueError, match="skip_layers: neither TinyDenoiser nor the models it wraps"):
        SGGDenoiser(model, GuidanceSchedule.autoguidance(2.0), skip_layers=[0])
    with pytest.raises(ValueError, match="sigma_to_t must be one of"):
        SGGDenoiser(model, GuidanceSchedule.cfg(2.0), sigma_to_t="vp")
    flow = SGGDenoiser(model, GuidanceSchedule.cfg(2.0), sigma_to_t="flow")
    with pytest.raises(ValueError, match=r"maps sigma = 14.6 to t = 14.6, outside \[0, 1\]"):
        flow(noise, torch.full((2,), 14.6), **extra)
    with pytest.raises(ValueError, match="uncond: the schedule uses the unconditional prediction"):
        SGGDenoiser(model, GuidanceSchedule.cfg(2.0))(noise, torch.full((2,), 3.0), cond=extra["cond"])
    with torch.no_grad():  # CFG on 0.9 < t <= 1 only: at t = 0.75 the conditional pass alone, no uncond needed
        got = SGGDenoiser(model, GuidanceSchedule.interval(2.0, 0.9, 1.0))(noise, torch.full((2,), 3.0),
                                                                          cond=extra["cond"])
        assert torch.equal(got, model(noise, torch.full((2,), 3.0), cond=extra["cond"]))
