"""End-to-end SD3 sampling on CPU: the reference SGG loop against this package's drop-in pipeline.

A small SD3Transformer2DModel with random weights (no download): latents [1, 16, 32, 32] (a 256 px
image), 12 blocks, so the SD3.5 skip layers 7, 8, 9 exist. 28 steps, the paper's settings: CFG at
4.5 on steps 1-14, skip-layer guidance at 3.0 on steps 15-28 (skip layers 7, 8, 9).

- `reference loop`: the official SGG SD3 loop (tests/test_diffusers_sd3.py transcribes it):
  the unconditional pass batched into every step, the eager guidance chain, diffusers'
  FlowMatchEulerDiscreteScheduler.step.
- `sgg drop-in`: StableDiffusion3SGGPipeline (sgg_kernels.integrations.diffusers_sd3): only the passes
  the plan needs, then torch.ops.sgg.guided_step_ in place.

Both ways make 42 transformer calls: the reference 28 batched (cond + uncond) and 14 skip-layer ones,
the drop-in 14 batched and 28 single (cond, then the skip-layer pass). The drop-in saves samples, not
calls, so its gain grows with the model's cost per sample: here a batch of two costs 1.56x one
(36 vs 56 ms at 32x32, one thread); at 16x16 it cost 1.27x and the gain was lost in the noise.

A forward hook on the transformer times every model call (CPU calls are synchronous), so a run splits
into model time and everything else (guidance, scheduler step, loop and pipeline overhead).
"""
from __future__ import annotations

import time

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

from sgg_kernels.integrations.diffusers_sd3 import StableDiffusion3SGGPipeline

STEPS, CFG_END, SLG_START = 28, 14, 15
GUIDANCE_SCALE, SLG_SCALE, SKIP_LAYERS = 4.5, 3.0, [7, 8, 9]
LATENT_SIDE, TOKENS, WIDTH = 32, 16, 64
WAYS = ("reference loop", "sgg drop-in")


class ModelClock:
    """Counts the transformer's sample-evaluations and the seconds spent in its forward calls."""

    def __init__(self, transformer):
        self.samples, self.seconds, self._t0 = 0, 0.0, None
        transformer.register_forward_pre_hook(self._before, with_kwargs=True)
        transformer.register_forward_hook(self._after)

    def _before(self, module, args, kwargs):
        self.samples += kwargs["hidden_states"].shape[0]
        self._t0 = time.perf_counter()

    def _after(self, module, args, output):
        self.seconds += time.perf_counter() - self._t0

    def reset(self):
        self.samples, self.seconds = 0, 0.0


def build(seed: int = 0):
    """(pipe, inputs): a base diffusers pipe around the random-weight transformer, and the prompt embeddings."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=LATENT_SIDE, patch_size=2, in_channels=16, out_channels=16, num_layers=12, attention_head_dim=16,
        num_attention_heads=4, joint_attention_dim=WIDTH, caption_projection_dim=WIDTH, pooled_projection_dim=WIDTH,
        pos_embed_max_size=LATENT_SIDE).eval()
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                                    tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    g = torch.Generator().manual_seed(seed + 1)
    inputs = dict(prompt_embeds=torch.randn(1, TOKENS, WIDTH, generator=g),
                  negative_prompt_embeds=torch.randn(1, TOKENS, WIDTH, generator=g),
                  pooled_prompt_embeds=torch.randn(1, WIDTH, generator=g),
                  negative_pooled_prompt_embeds=torch.randn(1, WIDTH, generator=g),
                  latents=torch.randn(1, 16, LATENT_SIDE, LATENT_SIDE, generator=g))
    return pipe, inputs


@torch.no_grad()
def reference_loop(pipe, inputs) -> torch.Tensor:
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    x, model = inputs["latents"].clone(), pipe.transformer
    pos, pooled = inputs["prompt_embeds"], inputs["pooled_prompt_embeds"]
    both = torch.cat([inputs["negative_prompt_embeds"], pos])
    both_pooled = torch.cat([inputs["negative_pooled_prompt_embeds"], pooled])
    for i, t in enumerate(scheduler.timesteps, start=1):
        v_u, v_c = model(hidden_states=torch.cat([x, x]), timestep=t.expand(2), encoder_hidden_states=both,
                         pooled_projections=both_pooled, return_dict=False)[0].chunk(2)
        v = v_u + GUIDANCE_SCALE * (v_c - v_u) if i <= CFG_END else v_c
        if i >= SLG_START:
            v_skip = model(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=pos, pooled_projections=pooled,
                           skip_layers=SKIP_LAYERS, return_dict=False)[0]
            v = v + SLG_SCALE * (v_c - v_skip)
        x = scheduler.step(v, t, x, return_dict=False)[0]
    return x


def sgg_drop_in(sgg: StableDiffusion3SGGPipeline, inputs) -> torch.Tensor:
    side = LATENT_SIDE * sgg.vae_scale_factor
    return sgg(height=side, width=side, num_inference_steps=STEPS, guidance_scale=GUIDANCE_SCALE,
               cfg_guidance_start=1, cfg_guidance_end=CFG_END, skip_guidance_layers=SKIP_LAYERS,
               skip_layer_guidance_scale=SLG_SCALE, skip_layer_guidance_start=SLG_START,
               skip_layer_guidance_end=STEPS, use_segmented_guidance=True, output_type="latent", **inputs).images


def sampler(way: str, pipe):
    """f(inputs) -> latents; the drop-in pipeline is built once, as a user would."""
    if way == "reference loop":
        return lambda inputs: reference_loop(pipe, inputs)
    sgg = StableDiffusion3SGGPipeline(**pipe.components)  # the same modules, nothing copied or cast
    sgg.set_progress_bar_config(disable=True)
    return lambda inputs: sgg_drop_in(sgg, inputs)
