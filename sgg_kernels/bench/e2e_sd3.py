"""End-to-end SD3 sampling on CPU: the reference SGG loop against this package's drop-in pipeline.

A small SD3Transformer2DModel with random weights (no download): latents [1, 16, 32, 32] (a 256 px
image), 12 blocks, so the SD3.5 skip layers 7, 8, 9 exist, and width 128 (4 heads of 32). 28 steps,
the paper's settings: CFG at 4.5 on steps 1-14, skip-layer guidance at 3.0 on steps 15-28 (skip
layers 7, 8, 9).

- `reference loop`: the official SGG loop (tests/test_diffusers_sd3.py transcribes it): the
  unconditional pass batched into every step, the eager guidance chain, diffusers'
  FlowMatchEulerDiscreteScheduler.step.
- `sgg drop-in`: StableDiffusion3SGGPipeline (sgg_kernels.integrations.diffusers_sd3): only the passes
  the plan needs, then torch.ops.sgg.guided_step_ in place.

Both ways make 42 transformer calls: the reference 28 batched (cond + uncond) and 14 skip-layer ones,
70 sample-evaluations (NFE); the drop-in 14 batched and 28 single (cond, then the skip-layer pass),
56 NFE. It saves samples, not calls, so its gain approaches the ideal 70/56 = 1.25x only where a
batch of two costs twice one; the width is chosen for that. Measured with one thread on the 2-core
VM: at width 128 a batch of two cost 2.08x one (81 vs 39 ms) at a load average of 0.8, 1.76x
(67 vs 38 ms) at 1.9 and 1.6x (157 vs 99 ms) at 7, where short calls lose more to the scheduler;
at width 64, 1.60x (31 vs 19 ms) at a load of 0.8.

A forward hook on the transformer times every model call (CPU calls are synchronous), so a run splits
into model time and everything else (guidance, scheduler step, loop and pipeline overhead).
"""
from __future__ import annotations

import contextlib
import statistics
import time

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

from sgg_kernels.integrations.diffusers_sd3 import StableDiffusion3SGGPipeline

STEPS, CFG_END, SLG_START = 28, 14, 15
GUIDANCE_SCALE, SLG_SCALE, SKIP_LAYERS = 4.5, 3.0, [7, 8, 9]
LATENT_SIDE, TOKENS, TEXT_WIDTH = 32, 16, 64
HEADS, HEAD_DIM = 4, 32  # width 128, where the transformer's cost is proportional to the batch (above)
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
        sample_size=LATENT_SIDE, patch_size=2, in_channels=16, out_channels=16, num_layers=12, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=TEXT_WIDTH, caption_projection_dim=HEADS * HEAD_DIM,
        pooled_projection_dim=TEXT_WIDTH, pos_embed_max_size=LATENT_SIDE).eval()
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                                    tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    g = torch.Generator().manual_seed(seed + 1)
    inputs = dict(prompt_embeds=torch.randn(1, TOKENS, TEXT_WIDTH, generator=g),
                  negative_prompt_embeds=torch.randn(1, TOKENS, TEXT_WIDTH, generator=g),
                  pooled_prompt_embeds=torch.randn(1, TEXT_WIDTH, generator=g),
                  negative_pooled_prompt_embeds=torch.randn(1, TEXT_WIDTH, generator=g),
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


@contextlib.contextmanager
def one_thread():
    # The model's ops are too small to share: on a busy 2-core machine two threads made the tests'
    # tiny SD3 forward ~30x slower (tests/test_diffusers_sd3.py).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class ImageTimer:
    """Samples one image per call the given way, on its own model, recording per image the wall
    seconds, the seconds in the model and the NFE; row() takes medians over the images since the
    last reset() (each image's time outside the model is its own wall minus its own model time)."""

    def __init__(self, way: str, seed: int = 0):
        self.way = way
        self.pipe, self.inputs = build(seed)
        self.clock = ModelClock(self.pipe.transformer)
        self.run = sampler(way, self.pipe)
        self.reset()

    def reset(self) -> None:
        self.images = []  # (wall s, model s, NFE) per image

    def __call__(self) -> torch.Tensor:
        self.clock.reset()
        t0 = time.perf_counter()
        out = self.run(self.inputs)
        self.images.append((time.perf_counter() - t0, self.clock.seconds, self.clock.samples))
        return out

    def check(self, out: torch.Tensor) -> None:
        """Both ways compute the same SGG sample (the drop-in's equivalence is tested in tests/): a wrong
        setting here would time different work."""
        torch.testing.assert_close(out, reference_loop(self.pipe, self.inputs), rtol=1e-4, atol=1e-4)

    def row(self) -> dict:
        wall, model, nfe = zip(*self.images)
        return dict(way=self.way, wall_s=statistics.median(wall), nfe=nfe[-1], model_s=statistics.median(model),
                    other_s=statistics.median(w - m for w, m in zip(wall, model)), threads=torch.get_num_threads(),
                    rounds=len(self.images))


def run_all(rounds: int, log=print) -> list[dict]:
    """One row per way: medians over `rounds` images after one warm-up image each. The ways take turns,
    image by image, so a load that comes and goes on a shared machine falls on both alike."""
    with one_thread():
        timers = [ImageTimer(way) for way in WAYS]
        for timer in timers:
            out = timer()
            if timer.way != "reference loop":
                timer.check(out)
            timer.reset()
        for _ in range(rounds):
            for timer in timers:
                timer()
    rows = [timer.row() for timer in timers]
    for r in rows:
        log(f"  e2e {r['way']}: {r['wall_s']:.3f} s per image, NFE {r['nfe']}")
    return rows
