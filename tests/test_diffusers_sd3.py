"""The diffusers SD3 drop-in against diffusers' own pipeline and a plain transcription of the official
SGG loop (PAPER.md), on tiny random components built offline (10 transformer blocks, so the default
skip-layer blocks 7, 8, 9 exist; 8x8 latents with 4 channels; a one-level VAE)."""
import copy

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler,  # noqa: E402
                       SD3Transformer2DModel, StableDiffusion3Pipeline)

from sgg_kernels import GuidanceSchedule  # noqa: E402
from sgg_kernels.integrations.diffusers_sd3 import FlowMatchGuidedStep, StableDiffusion3SGGPipeline  # noqa: E402

SIZE, STEPS = 8, 28
PAPER = dict(guidance_scale=4.5, cfg_guidance_start=1, cfg_guidance_end=14, use_segmented_guidance=True,
             skip_guidance_layers=[7, 8, 9], skip_layer_guidance_scale=3.0, skip_layer_guidance_start=15,
             skip_layer_guidance_end=28, cfg_schedule="constant", cfg_d_w=0.0, slg_schedule="constant", slg_d_w=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    # The tiny model's ops are far too small to share: on a busy 2-core machine two threads made
    # each forward ~30x slower (0.8 s against 0.025 s measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=SIZE, patch_size=1, in_channels=4, out_channels=4, num_layers=10, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16,
        pos_embed_max_size=SIZE).eval()
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
    g = torch.Generator().manual_seed(1)
    sequence, pooled = (2, 5, 16), (2, 16)  # batch 2, 5 tokens, joint_attention_dim 16
    return dict(prompt_embeds=torch.randn(sequence, generator=g),
                negative_prompt_embeds=torch.randn(sequence, generator=g),
                pooled_prompt_embeds=torch.randn(pooled, generator=g),
                negative_pooled_prompt_embeds=torch.randn(pooled, generator=g))


class CountSamples:
    """Counts the transformer's sample-evaluations (batch rows over all forward calls)."""

    def __init__(self, transformer):
        self.samples = 0
        self.handle = transformer.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.samples += kwargs["hidden_states"].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def scale_at(i, scale, start, end, schedule, d_w):
    """The official per-step scale: constant, or linear from scale + d_w to scale - d_w over [start, end]."""
    if schedule == "linear" and d_w > 0:
        p = (i - start) / (end - start) if end > start else 0.0
        return scale + d_w * (1 - 2 * p)
    return scale


@torch.no_grad()
def reference_sgg(pipe, latents, embeds, args):
    """The official SD3 SGG loop, transcribed (PAPER.md): steps 1-indexed, ranges inclusive, and the
    unconditional pass batched into every step whenever guidance_scale > 1."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    x, run = latents.clone(), pipe.transformer
    pos, pooled = embeds["prompt_embeds"], embeds["pooled_prompt_embeds"]
    both = torch.cat([embeds["negative_prompt_embeds"], pos])
    both_pooled = torch.cat([embeds["negative_pooled_prompt_embeds"], pooled])
    for i, t in enumerate(scheduler.timesteps, start=1):
        if args["guidance_scale"] > 1:
            v_u, v_c = run(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * len(x)), encoder_hidden_states=both,
                           pooled_projections=both_pooled, return_dict=False)[0].chunk(2)
            v = v_c
            if args["cfg_guidance_start"] <= i <= args["cfg_guidance_end"]:
                s = scale_at(i, args["guidance_scale"], args["cfg_guidance_start"], args["cfg_guidance_end"],
                             args["cfg_schedule"], args["cfg_d_w"])
                v = v_u + s * (v_c - v_u)
        else:
            v = v_c = run(hidden_states=x, timestep=t.expand(len(x)), encoder_hidden_states=pos,
                          pooled_projections=pooled, return_dict=False)[0]
        start, end = args["skip_layer_guidance_start"], args["skip_layer_guidance_end"]
        if args["use_segmented_guidance"] and start <= i <= end:
            v_skip = run(hidden_states=x, timestep=t.expand(len(x)), encoder_hidden_states=pos,
                         pooled_projections=pooled, skip_layers=args["skip_guidance_layers"], return_dict=False)[0]
            v = v + scale_at(i, args["skip_layer_guidance_scale"], start, end, args["slg_schedule"],
                             args["slg_d_w"]) * (v_c - v_skip)
        x = scheduler.step(v, t, x, return_dict=False)[0]
    return x


def initial_latents(seed=0):
    return torch.randn(2, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


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
    args = {**PAPER, **case}
    latents = initial_latents()
    kept = latents.clone()
    with CountSamples(pipe.transformer) as counted_reference:
        expected = reference_sgg(pipe, latents, embeds, args)
    with CountSamples(pipe.transformer) as counted_sgg:
        got = sgg_pipe(**embeds, **args, height=SIZE, width=SIZE, num_inference_steps=STEPS, latents=latents,
                       output_type="latent").images
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(latents, kept)  # the caller's latents are not written
    if case == {}:  # per sample: reference 28 x (cond + uncond) + 14 skip = 70; drop-in 14 x 2 + 14 x 2 = 56
        assert counted_reference.samples == 2 * 70 and counted_sgg.samples == 2 * 56


def test_bf16_close_to_reference_loop(pipe, embeds):
    # The paper samples in bf16. The fused pass computes guidance and step in float32 and rounds once,
    # where the reference rounds the guided velocity to bf16 first. Measured: at most 1 bf16 ulp of the
    # latents' scale apart (0.031 where |latents| <= 4.5); the test allows 2.
    half = StableDiffusion3Pipeline(**{**pipe.components, "transformer": copy.deepcopy(pipe.transformer).bfloat16()})
    embeds = {name: e.bfloat16() for name, e in embeds.items()}
    latents = initial_latents().bfloat16()
    expected = reference_sgg(half, latents, embeds, PAPER)
    got = sgg_of(half)(**embeds, **PAPER, height=SIZE, width=SIZE, num_inference_steps=STEPS, latents=latents,
                       output_type="latent").images
    assert got.dtype == torch.bfloat16
    scale = expected.float().abs().max()
    ulp = 2.0 ** (torch.floor(torch.log2(scale)) - 7)  # bf16 keeps 8 significant bits
    assert (got.float() - expected.float()).abs().max() <= 2 * ulp


def test_defaults_are_the_paper_setting_and_callbacks_see_each_step(sgg_pipe, embeds):
    latents = initial_latents(seed=4)
    default = sgg_pipe(**embeds, height=SIZE, width=SIZE, latents=latents, output_type="latent").images
    explicit = sgg_pipe(**embeds, **PAPER, height=SIZE, width=SIZE, num_inference_steps=STEPS, latents=latents,
                        output_type="latent").images
    assert torch.equal(default, explicit)
    seen = []  # with a callback each step writes a new tensor, so the ones it was shown stay intact

    def keep(pipe, i, t, tensors):
        seen.append(tensors["latents"])
        return tensors
    with_callback = sgg_pipe(**embeds, height=SIZE, width=SIZE, latents=latents, output_type="latent",
                             callback_on_step_end=keep).images
    assert torch.equal(with_callback, default) and torch.equal(seen[-1], default)
    assert len(seen) == STEPS and not torch.equal(seen[0], seen[1])


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
        sgg_pipe(**common, skip_guidance_layers=[7, 8, 12])
    with pytest.raises(ValueError, match=r"cfg_guidance_end must be a step index in \[1, 28\]"):
        sgg_pipe(**common, cfg_guidance_end=30)
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
