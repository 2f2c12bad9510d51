"""Tiny random diffusers components built offline, the official SGG SD3 loop transcribed, and a
sample-evaluation counter; shared by the diffusers tests (which importorskip diffusers first)."""
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

SIZE = 8  # SD3 latents: 8x8, 4 channels


def tiny_sd3_transformer(seed=0):
    """10 joint blocks, so the official skip-layer blocks 7, 8, 9 exist."""
    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=SIZE, patch_size=1, in_channels=4, out_channels=4, num_layers=10, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16,
        pos_embed_max_size=SIZE).eval()


def sd3_embeds(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    sequence, pooled = (batch, 5, 16), (batch, 16)  # 5 tokens, joint_attention_dim 16
    return dict(prompt_embeds=torch.randn(sequence, generator=g),
                negative_prompt_embeds=torch.randn(sequence, generator=g),
                pooled_prompt_embeds=torch.randn(pooled, generator=g),
                negative_pooled_prompt_embeds=torch.randn(pooled, generator=g))


def initial_latents(seed=0, batch=2):
    return torch.randn(batch, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


class CountSamples:
    """Counts a module's sample-evaluations (batch rows over all its calls)."""

    def __init__(self, module, key="hidden_states"):
        self.samples, self.key = 0, key
        self.handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.samples += (kwargs[self.key] if self.key in kwargs else args[0]).shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# The official pipeline's defaults (its __call__ signature).
OFFICIAL_DEFAULTS = dict(guidance_scale=7.0, cfg_guidance_start=1, cfg_guidance_end=28, use_segmented_guidance=False,
                         skip_guidance_layers=None, skip_layer_guidance_scale=2.8, skip_layer_guidance_start=1,
                         skip_layer_guidance_end=28, cfg_schedule="constant", cfg_d_w=0.0, slg_schedule="constant",
                         slg_d_w=0.0)


def official_scale(i, scale, start, end, schedule, d_w):
    """The official per-step scale at 0-based step i: linear from scale + d_w to scale - d_w over the
    nominal range [start, end] (even where it runs past the last step), else constant."""
    if schedule == "linear" and d_w > 0:
        step_range = end - start + 1
        progress = (i - (start - 1)) / (step_range - 1) if step_range > 1 else 0.0
        return scale + d_w * (1.0 - 2.0 * progress)
    return scale


@torch.no_grad()
def reference_sgg(transformer, scheduler_config, num_steps, latents, embeds, **given):
    """The official SD3 SGG loop (sd3/sd3_pipeline.py), transcribed: 0-based i, CFG where
    cfg_guidance_start - 1 <= i <= cfg_guidance_end - 1, the unconditional pass batched into every
    step whenever guidance_scale > 1, the skip-layer pass only when skip_guidance_layers is given."""
    a = {**OFFICIAL_DEFAULTS, **given}
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(num_steps)
    x, run = latents.clone(), transformer
    pos, pooled = embeds["prompt_embeds"], embeds["pooled_prompt_embeds"]
    both = torch.cat([embeds["negative_prompt_embeds"], pos])
    both_pooled = torch.cat([embeds["negative_pooled_prompt_embeds"], pooled])
    cfg = a["guidance_scale"] > 1
    for i, t in enumerate(scheduler.timesteps):
        start, end = a["skip_layer_guidance_start"], a["skip_layer_guidance_end"]
        in_slg = a["use_segmented_guidance"] and start - 1 <= i <= end - 1
        slg = official_scale(i, a["skip_layer_guidance_scale"], a["skip_layer_guidance_start"],
                             a["skip_layer_guidance_end"], a["slg_schedule"], a["slg_d_w"])
        if cfg:
            v_u, v_c = run(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * len(x)), encoder_hidden_states=both,
                           pooled_projections=both_pooled, return_dict=False)[0].chunk(2)
            v = v_c
            if a["cfg_guidance_start"] - 1 <= i <= a["cfg_guidance_end"] - 1:
                s = official_scale(i, a["guidance_scale"], a["cfg_guidance_start"], a["cfg_guidance_end"],
                                   a["cfg_schedule"], a["cfg_d_w"])
                v = v_u + s * (v_c - v_u)
            if a["skip_guidance_layers"] is not None and in_slg:
                v_skip = run(hidden_states=x, timestep=t.expand(len(x)), encoder_hidden_states=pos,
                             pooled_projections=pooled, skip_layers=a["skip_guidance_layers"], return_dict=False)[0]
                v = v + (v_c - v_skip) * slg
        else:
            v = run(hidden_states=x, timestep=t.expand(len(x)), encoder_hidden_states=pos, pooled_projections=pooled,
                    return_dict=False)[0]
            if in_slg:
                v_skip = run(hidden_states=x, timestep=t.expand(len(x)), encoder_hidden_states=pos,
                             pooled_projections=pooled, skip_layers=a["skip_guidance_layers"], return_dict=False)[0]
                v = v + (v - v_skip) * slg
        x = scheduler.step(v, t, x, return_dict=False)[0]
    return x
