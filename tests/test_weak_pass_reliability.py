"""The weak pass ends with its call, whatever happens: on a compiled denoiser (torch.compile(model), which
returns a wrapper, and model.compile(), in place), and when a hook around the denoiser's forward raises."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402
from diffusers_tiny import SIZE, initial_latents, tiny_sd3_transformer  # noqa: E402
from test_diffusers_guider import modular, run_sd3, run_wan, tiny_wan  # noqa: E402

from sgg_kernels import GuidanceSchedule  # noqa: E402
from sgg_kernels.integrations.diffusers_guider import SGGGuider  # noqa: E402
from sgg_kernels.integrations.weak_pass import arm_weak_pass, is_armed  # noqa: E402
from diffusers.modular_pipelines.stable_diffusion_3.modular_blocks_stable_diffusion_3 import (  # noqa: E402
    StableDiffusion3T2ICoreDenoiseStep)


pytestmark = pytest.mark.usefixtures("one_thread")


def compiled(model, form):
    """The two ways users compile a denoiser; the eager backend keeps the test fast and exact, and the
    wrapping logic under test is the same for every backend."""
    torch._dynamo.reset()
    if form == "wrapper":
        return torch.compile(model, backend="eager")
    model.compile(backend="eager")
    return model


def sd3_direct_call(transformer):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        return transformer(hidden_states=torch.randn(1, 4, SIZE, SIZE, generator=g), timestep=torch.tensor([500.0]),
                           encoder_hidden_states=torch.randn(1, 5, 16, generator=g),
                           pooled_projections=torch.randn(1, 16, generator=g), return_dict=False)[0]


def sd3_pipe(transformer, guider):
    return modular(StableDiffusion3T2ICoreDenoiseStep(), transformer=transformer,
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), guider=guider)


@pytest.mark.parametrize("form", ["wrapper", "in_place"])
def test_sd3_compiled_denoiser_equals_eager_and_is_left_strong(form):
    schedule = GuidanceSchedule.sd3_paper(6)
    eager_model = tiny_sd3_transformer()
    latents = initial_latents()
    expected = run_sd3(sd3_pipe(eager_model, SGGGuider(schedule, skip_layers=[7, 8, 9])), latents, steps=6)
    strong_direct = sd3_direct_call(eager_model)

    model = compiled(tiny_sd3_transformer(), form)
    got = run_sd3(sd3_pipe(model, SGGGuider(schedule, skip_layers=[7, 8, 9])), latents, steps=6)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not is_armed(model)
    torch.testing.assert_close(sd3_direct_call(model), strong_direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["wrapper", "in_place"])
def test_wan_compiled_denoiser_equals_eager_and_is_left_strong(form):
    schedule = GuidanceSchedule.sgg(cfg_scale=5.0, cag_scale=2.0, boundary=0.6)
    expected = run_wan(SGGGuider(schedule, skip_layers=[1]), tiny_wan())
    model = compiled(tiny_wan(), form)
    got = run_wan(SGGGuider(schedule, skip_layers=[1]), model)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not is_armed(model)


@pytest.mark.parametrize("hook_kind", ["pre", "post"])
@pytest.mark.parametrize("form", ["eager", "wrapper"])
def test_a_hook_that_raises_during_the_weak_pass_leaves_the_denoiser_strong(hook_kind, form):
    """An offloading or profiling hook that fails in the weak call: the next direct call is the strong one."""
    eager_model = tiny_sd3_transformer()
    strong_direct = sd3_direct_call(eager_model)
    model = eager_model if form == "eager" else compiled(eager_model, form)

    def failing_hook(*args):
        raise RuntimeError("hook failed")
    register = model.register_forward_pre_hook if hook_kind == "pre" else model.register_forward_hook
    handle = register(failing_hook)
    arm_weak_pass(model, skip_layers=[7, 8, 9])
    with pytest.raises(RuntimeError, match="hook failed"):
        sd3_direct_call(model)
    handle.remove()
    assert not is_armed(model)
    assert [name for name, m in model.named_modules() if "forward" in m.__dict__ and m is not model] == []
    torch.testing.assert_close(sd3_direct_call(model), strong_direct, rtol=1e-5, atol=1e-5)


def test_guider_with_a_failing_pre_hook_leaves_the_denoiser_strong():
    """Through the pipeline: the step fails, and the transformer is not left in skip-layer mode."""
    model = tiny_sd3_transformer()
    strong_direct = sd3_direct_call(model)
    calls = []

    def fail_on_third_call(module, args):  # step 1's passes: cond, uncond, then the weak one fails
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("offload hook failed")
    model.register_forward_pre_hook(fail_on_third_call)
    schedule = GuidanceSchedule.from_sd3_args(2, guidance_scale=3.0, cfg_guidance_start=1, cfg_guidance_end=2,
                                              skip_layer_guidance_scale=2.0, skip_layer_guidance_start=1,
                                              skip_layer_guidance_end=2)
    with pytest.raises(RuntimeError, match="offload hook failed"):
        run_sd3(sd3_pipe(model, SGGGuider(schedule, skip_layers=[7, 8, 9])), initial_latents(), steps=2)
    assert not is_armed(model)
    torch.testing.assert_close(sd3_direct_call(model), strong_direct, rtol=1e-5, atol=1e-5)
