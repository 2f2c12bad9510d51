"""The SD3 drop-in with one guidance schedule per prompt: each image equals its single-prompt call, and the
transformer evaluates only the rows each step's schedules use (tiny offline components, diffusers_tiny.py)."""
import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402
from diffusers_tiny import SIZE, CountSamples, initial_latents, sd3_embeds, tiny_sd3_transformer  # noqa: E402

from sgg_kernels import GuidanceSchedule  # noqa: E402
from sgg_kernels.integrations.diffusers_sd3 import StableDiffusion3SGGPipeline  # noqa: E402

STEPS = 8
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    pipe = StableDiffusion3SGGPipeline(transformer=tiny_sd3_transformer(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                       vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                                       tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe, embeds, latents, schedule, images=1):
    with CountSamples(pipe.transformer) as counted:
        out = pipe(**embeds, height=SIZE, width=SIZE, num_inference_steps=STEPS, latents=latents,
                   guidance_schedule=schedule, skip_guidance_layers=[7, 8, 9], num_images_per_prompt=images,
                   output_type="latent").images
    return out, counted.samples


def rows(embeds, k, n=1):
    return {name: e[k * n:(k + 1) * n] for name, e in embeds.items()}


@pytest.mark.parametrize("images", [1, 2])
def test_each_image_equals_its_single_prompt_call(pipe, images):
    schedules = [GuidanceSchedule.sd3_paper(STEPS),                       # CFG then skip-layer
                 GuidanceSchedule.cfg(4.5),                               # CFG throughout
                 GuidanceSchedule(),                                      # no guidance
                 GuidanceSchedule.from_sd3_args(STEPS, guidance_scale=1.0, skip_layer_guidance_start=1,
                                                skip_layer_guidance_end=3)]  # skip-layer first
    embeds = sd3_embeds(batch=len(schedules))
    latents = initial_latents(batch=len(schedules) * images)
    together, evaluations = call(pipe, embeds, latents, schedules, images)
    expected = 0
    for k, schedule in enumerate(schedules):
        alone, counted = call(pipe, rows(embeds, k), latents[k * images:(k + 1) * images], schedule, images)
        torch.testing.assert_close(together[k * images:(k + 1) * images], alone, rtol=0, atol=1e-5)
        expected += counted
    # Per image, cond at every step plus what its prompt's schedule uses: (8 + 4 uncond + 4 skip-layer)
    # + (8 + 8 uncond) + 8 + (8 + 3 skip-layer) = 51 for 4 prompts, where every pass on every row is 96.
    assert evaluations == expected == 51 * images


def test_a_schedule_list_is_checked_before_any_pass(pipe):
    embeds, latents = sd3_embeds(batch=2), initial_latents(batch=2)
    with CountSamples(pipe.transformer) as counted:
        with pytest.raises(ValueError, match="guidance_schedule has 3 schedules but the call has 2 prompts"):
            call(pipe, embeds, latents, [GuidanceSchedule()] * 3)
        with pytest.raises(TypeError, match=r"guidance_schedule\[1\] must be a GuidanceSchedule, got float"):
            call(pipe, embeds, latents, [GuidanceSchedule(), 4.5])
    assert counted.samples == 0
