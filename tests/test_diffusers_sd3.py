"""The diffusers SD3 drop-in against diffusers' own pipeline and a plain transcription of the official
SGG loop (sd3/sd3_pipeline.py of the SGG repository, in diffusers_tiny.py), on tiny random components
built offline (10 transformer blocks, so the skip-layer blocks 7, 8, 9 exist; 8x8 latents with 4
channels; a one-level VAE)."""
import copy

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline  # noqa: E402
from diffusers_tiny import (SIZE, CountSamples, initial_latents, reference_sgg, sd3_embeds,  # noqa: E402
                            tiny_sd3_transformer)

from sgg_kernels import GuidanceSchedule  # noqa: E402
from sgg_kernels.integrations.diffusers_sd3 import FlowMatchGuidedStep, StableDiffusion3SGGPipeline  # noqa: E402

STEPS = 28
SGG_SD3_ARGS = dict(guidance_scale=4.5, cfg_guidance_start=1, cfg_guidance_end=14, use_segmented_guidance=True,
                    skip_guidance_layers=[7, 8, 9], skip_layer_guidance_scale=3.0, skip_layer_guidance_start=15,
                    skip_layer_guidance_end=28, cfg_schedule="constant", cfg_d_w=0.0, slg_schedule="constant",
                    slg_d_w=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    transformer = tiny_sd3_transformer()
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), latent_channels=4,
                        norm_num_groups=1, layers_per_block=1, shift_factor=0.0609, scaling_factor=1.5035).eval()
    # No tokenizers or text encoders: the tests pass prompt embeddings directly.
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sgg_pipe(pipe):
    return sgg_of(pipe)


def sgg_of(pipe):
    sgg = StableDiffusion3SGGPipeline(**pipe.components)  # the same modules, nothing copied or cast
    sgg.set_progress_bar_config(disable=True)
    return sgg


@pytest.fixture(scope="module")
def embeds():
    return sd3_embeds()


def reference(pipe, latents, embeds, steps=STEPS, **args):
    return reference_sgg(pipe.transformer, pipe.scheduler.config, steps, latents, embeds, **args)


def run(sgg_pipe, latents, embeds, steps=STEPS, **args):
    return sgg_pipe(**embeds, **args, height=SIZE, width=SIZE, num_inference_steps=steps, latents=latents,
                    output_type="latent").images


def test_cfg_only_equals_diffusers_pipeline(pipe, sgg_pipe, embeds):
    common = dict(**embeds, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=4.5, output_type="np")
    with CountSamples(pipe.transformer) as counted_diffusers:
        expected = pipe(**common, generator=torch.Generator().manual_seed(3)).images
    with CountSamples(pipe.transformer) as counted_sgg:
        got = sgg_pipe(**common, cfg_guidance_start=1, cfg_guidance_end=STEPS, use_segmented_guidance=False,
                       generator=torch.Generator().manual_seed(3)).images
    assert got.shape == expected.shape == (2, SIZE, SIZE, 3)
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    assert counted_sgg.samples == counted_diffusers.samples == 2 * 2 * STEPS


@pytest.mark.parametrize("case", [
    dict(),                                                               # the paper's setting
    dict(cfg_guidance_end=20, skip_layer_guidance_start=10),             # overlapping ranges: both terms add
    dict(cfg_schedule="linear", cfg_d_w=1.0, slg_schedule="linear", slg_d_w=0.5),
], ids=["paper", "overlap", "linear"])
def test_sgg_equals_reference_loop(pipe, sgg_pipe, embeds, case):
    args = {**SGG_SD3_ARGS, **case}
    latents = initial_latents()
    kept = latents.clone()
    with CountSamples(pipe.transformer) as counted_reference:
        expected = reference(pipe, latents, embeds, **args)
    with CountSamples(pipe.transformer) as counted_sgg:
        got = run(sgg_pipe, latents, embeds, **args)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(latents, kept)  # the caller's latents are not written
    if case == {}:  # per sample: reference 28 x (cond + uncond) + 14 skip = 70; drop-in 14 x 2 + 14 x 2 = 56
        assert counted_reference.samples == 2 * 70 and counted_sgg.samples == 2 * 56


@pytest.mark.parametrize("steps, case", [
    (STEPS, dict()),                                                    # the defaults: CFG 7.0 on 1..28
    (STEPS, dict(use_segmented_guidance=False, skip_guidance_layers=[7, 8, 9])),
    (STEPS, dict(use_segmented_guidance=True)),                         # no blocks given: no skip-layer term
    (STEPS, dict(use_segmented_guidance=True, skip_guidance_layers=[8])),  # SLG 2.8 on 1..28 over CFG 7.0
    (10, dict(cfg_guidance_end=28, use_segmented_guidance=True, skip_guidance_layers=[7, 8, 9],
              skip_layer_guidance_start=6)),                            # ends past the run are accepted
    (10, dict(guidance_scale=4.5, cfg_guidance_start=3, cfg_schedule="linear", cfg_d_w=1.0, use_segmented_guidance=True,
              skip_guidance_layers=[7], skip_layer_guidance_start=0, slg_schedule="linear", slg_d_w=0.5)),
    (10, dict(guidance_scale=1.0, use_segmented_guidance=True, skip_guidance_layers=[7, 8, 9],
              skip_layer_guidance_start=4, skip_layer_guidance_end=12)),  # no CFG: cond + SLG only
    (6, dict(guidance_scale=4.5, cfg_guidance_start=7, use_segmented_guidance=True, skip_guidance_layers=[9],
             skip_layer_guidance_start=-3, skip_layer_guidance_end=2)),  # CFG range after the run: never
], ids=["defaults", "not-segmented", "segmented-no-layers", "slg-everywhere", "ends-past-run", "linear-clipped",
        "no-cfg", "cfg-never"])
def test_every_official_call_gives_its_latents(pipe, sgg_pipe, embeds, steps, case):
    latents = initial_latents(seed=5)
    expected = reference(pipe, latents, embeds, steps=steps, **case)
    torch.testing.assert_close(run(sgg_pipe, latents, embeds, steps=steps, **case), expected, rtol=1e-5, atol=1e-5)


def test_defaults_equal_diffusers_pipeline_and_paper_preset(pipe, sgg_pipe, embeds):
    common = dict(**embeds, height=SIZE, width=SIZE, output_type="latent", latents=initial_latents(seed=4))
    torch.testing.assert_close(sgg_pipe(**common).images, pipe(**common).images, rtol=1e-5, atol=1e-5)
    preset = sgg_pipe(**common, guidance_schedule=GuidanceSchedule.sd3_paper(STEPS), skip_guidance_layers=[7, 8, 9])
    assert torch.equal(preset.images, sgg_pipe(**common, **SGG_SD3_ARGS).images)


def test_precomputed_embeddings_repeat_per_image(sgg_pipe, embeds):
    common = dict(height=SIZE, width=SIZE, output_type="latent", num_inference_steps=4, **SGG_SD3_ARGS)
    latents = torch.randn(4, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    two_each = run(sgg_pipe, latents, embeds, steps=4, num_images_per_prompt=2, **SGG_SD3_ARGS)
    repeated = {k: v.repeat_interleave(2, dim=0) for k, v in embeds.items()}  # prompt 0, 0, 1, 1
    assert two_each.shape[0] == 4
    assert torch.equal(two_each, sgg_pipe(**repeated, latents=latents, **common).images)


def test_callbacks_see_each_step(sgg_pipe, embeds):
    latents = initial_latents(seed=4)
    default = run(sgg_pipe, latents, embeds, **SGG_SD3_ARGS)
    seen = []  # with a callback each step writes a new tensor, so the ones it was shown stay intact

    def keep(pipe, i, t, tensors):
        seen.append(tensors["latents"])
        return tensors
    with_callback = sgg_pipe(**embeds, **SGG_SD3_ARGS, height=SIZE, width=SIZE, latents=latents, output_type="latent",
                             callback_on_step_end=keep).images
    assert torch.equal(with_callback, default) and torch.equal(seen[-1], default)
    assert len(seen) == STEPS and not torch.equal(seen[0], seen[1])


def test_bf16_close_to_reference_loop(pipe, embeds):
    # The paper samples in bf16. The fused pass computes guidance and step in float32 and rounds once,
    # where the reference rounds the guided velocity to bf16 first. Measured: at most 1 bf16 ulp of the
    # latents' scale apart (0.031 where |latents| <= 4.5); the test allows 2.
    half = StableDiffusion3Pipeline(**{**pipe.components, "transformer": copy.deepcopy(pipe.transformer).bfloat16()})
    embeds = {name: e.bfloat16() for name, e in embeds.items()}
    latents = initial_latents().bfloat16()
    expected = reference(half, latents, embeds, **SGG_SD3_ARGS)
    got = run(sgg_of(half), latents, embeds, **SGG_SD3_ARGS)
    assert got.dtype == torch.bfloat16
    scale = expected.float().abs().max()
    ulp = 2.0 ** (torch.floor(torch.log2(scale)) - 7)  # bf16 keeps 8 significant bits
    assert (got.float() - expected.float()).abs().max() <= 2 * ulp


def test_guided_step_replaces_guidance_and_scheduler_step():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(6)
    stepper = FlowMatchGuidedStep(scheduler, GuidanceSchedule.sgg(5.0, 2.0, 0.5))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 3, generator=g)
    for i, t in enumerate(scheduler.timesteps):
        c, u, w = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
        need_uncond, need_weak = stepper.needs(i)
        assert (need_uncond, need_weak) == (scheduler.sigmas[i] > 0.5, scheduler.sigmas[i] <= 0.5)
        v = u + 5.0 * (c - u) if need_uncond else c + 1.0 * (c - w)
        expected = scheduler.step(v, t, x, return_dict=False)[0]
        x = stepper.step(i, x, c, u if need_uncond else None, w if need_weak else None)
        torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-6)


def test_bad_arguments(sgg_pipe, embeds):
    common = dict(**embeds, height=SIZE, width=SIZE, num_inference_steps=STEPS, output_type="latent")
    with pytest.raises(ValueError, match=r"skip_guidance_layers must be block indices in \[0, 10\)"):
        sgg_pipe(**common, use_segmented_guidance=True, skip_guidance_layers=[7, 8, 12])
    with pytest.raises(ValueError, match="cfg_guidance_end must be an int step index"):
        sgg_pipe(**common, cfg_guidance_end=14.5)
    with pytest.raises(ValueError, match="slg_schedule must be one of"):
        sgg_pipe(**common, use_segmented_guidance=True, skip_guidance_layers=[7], slg_schedule="lineer")
    with pytest.raises(ValueError, match="guidance_scale <= 1 needs skip_guidance_layers"):  # the official fails
        sgg_pipe(**common, guidance_scale=1.0, use_segmented_guidance=True)
    with pytest.raises(ValueError, match="stochastic_sampling=True"):
        stochastic = FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
        stochastic.set_timesteps(4)
        FlowMatchGuidedStep(stochastic, GuidanceSchedule.cfg(4.0))
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(4)
    stepper = FlowMatchGuidedStep(scheduler, GuidanceSchedule.cfg(4.0))
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match=r"step 1/4 \(cdg\) needs the uncond prediction"):
        stepper.step(0, x, x.clone())
