"""SGG for diffusers: a drop-in StableDiffusion3Pipeline and a guided step for other flow-matching loops.

Needs the ``diffusers`` extra (``pip install .[diffusers]``); ``import sgg_kernels`` never imports it.

- :class:`StableDiffusion3SGGPipeline` is diffusers' ``StableDiffusion3Pipeline`` (SD3 and SD3.5) with
  the official SGG pipeline's arguments and defaults. The weak model is the pipe's own transformer
  with ``skip_guidance_layers`` skipped. Each step runs only the passes its weights use and
  combines them with the scheduler's Euler step in one ``torch.ops.sgg.guided_step_`` pass.
- :class:`FlowMatchGuidedStep` replaces "guidance + ``scheduler.step``" in any denoising loop that
  runs ``FlowMatchEulerDiscreteScheduler`` deterministically (no ``stochastic_sampling``, no
  ``invert_sigmas``, no per-token timesteps); the loop asks it which predictions step i needs.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift, retrieve_timesteps
from diffusers.utils import logging

from ..distributed import as_branch_group, evaluate_branches
from ..sampler import GuidanceTables
from ..schedule import SHAPES, GuidanceSchedule, Segment
from .sd3_per_prompt import check_schedules, denoise_per_prompt, union

logger = logging.get_logger(__name__)


class FlowMatchGuidedStep:
    """Guidance plus the Euler step of a FlowMatchEulerDiscreteScheduler, for step i of its sigmas.

        stepper = FlowMatchGuidedStep(pipe.scheduler, schedule, device)   # after set_timesteps
        for i, t in enumerate(pipe.scheduler.timesteps):
            need_uncond, need_weak = stepper.needs(i)
            cond, uncond, weak = ...        # run only the passes that are needed; others None
            latents = stepper.step(i, latents, cond, uncond, weak)

    The schedule's noise levels are the scheduler's sigmas (t = sigma, 1 noise, 0 data); step
    segments count its steps from 1. `step` writes `latents` in place (in_place=False returns a new
    tensor) and does not advance the scheduler's own step index.
    """

    def __init__(self, scheduler: FlowMatchEulerDiscreteScheduler, schedule: GuidanceSchedule,
                 device: Union[torch.device, str, None] = None):
        """device: where the latents live (default: the scheduler's sigmas' device, set by set_timesteps)."""
        if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
            raise TypeError("FlowMatchGuidedStep needs a FlowMatchEulerDiscreteScheduler, "
                            f"got {type(scheduler).__name__}")
        for flag in ("stochastic_sampling", "invert_sigmas"):
            if scheduler.config.get(flag, False):
                raise ValueError(f"FlowMatchGuidedStep supports the deterministic Euler step only; "
                                 f"the scheduler has {flag}=True")
        if getattr(scheduler, "sigmas", None) is None or scheduler.num_inference_steps is None:
            raise ValueError("call scheduler.set_timesteps(...) before building FlowMatchGuidedStep")
        device = scheduler.sigmas.device if device is None else torch.device(device)
        self.tables = GuidanceTables.build(schedule, scheduler.sigmas.double(), device)

    @property
    def num_steps(self) -> int:
        return self.tables.num_steps

    def needs(self, i: int) -> tuple[bool, bool]:
        """(uncond, weak): whether step i uses the unconditional and the weak prediction."""
        return self.tables.plan.uncond[i], self.tables.plan.weak[i]

    def step(self, i: int, latents: Tensor, cond: Tensor, uncond: Optional[Tensor] = None,
             weak: Optional[Tensor] = None, in_place: bool = True) -> Tensor:
        need_uncond, need_weak = self.needs(i)
        for name, needed, given in (("uncond", need_uncond, uncond), ("weak", need_weak, weak)):
            if needed and given is None:
                raise ValueError(f"step {i + 1}/{self.num_steps} ({self.tables.active(i)}) needs the {name} "
                                 "prediction, got None")
        args = (cond, uncond if need_uncond else None, weak if need_weak else None,
                self.tables.weights[i], self.tables.euler[i])
        if in_place:
            torch.ops.sgg.guided_step_(latents, *args)
            return latents
        return torch.ops.sgg.guided_step(latents, *args)


def official_sd3_schedule(
    num_inference_steps: int, guidance_scale: float = 7.0, cfg_guidance_start: int = 1, cfg_guidance_end: int = 28,
    use_segmented_guidance: bool = False, skip_layer_guidance_scale: float = 2.8, skip_layer_guidance_start: int = 1,
    skip_layer_guidance_end: int = 28, cfg_schedule: str = "constant", cfg_d_w: float = 0.0,
    slg_schedule: str = "constant", slg_d_w: float = 0.0, has_skip_layers: bool = True,
) -> GuidanceSchedule:
    """The official SD3 SGG pipeline's per-step rule, with its defaults and its tolerance of ranges
    that run past the run (`GuidanceSchedule.from_sd3_args` is the strict form).

    Step k (1-indexed) gets CFG when guidance_scale > 1 and cfg_guidance_start <= k <= cfg_guidance_end,
    and skip-layer guidance when use_segmented_guidance, skip-layer blocks are given and k lies in its
    range; the parts of a range outside the run (the default end 28 at fewer steps, a start below
    1) simply never match. A 'linear' scale goes from scale + d_w to scale - d_w over the *nominal* range, so at 10
    steps with the default end 28 only its first 10 values are used. As in the official code, a
    schedule other than 'linear', or d_w <= 0, is constant ('cosine' is this package's addition and
    needs a range inside the run). Without skip-layer blocks the official pipeline skips the
    skip-layer term when CFG is on and fails when it is off; here the latter raises a ValueError.
    """
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")

    def segment(kind, prefix, scale, start, end, schedule, d_w) -> list[Segment]:
        for name, v in ((f"{prefix}_start", start), (f"{prefix}_end", end)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an int step index (1-indexed), got {v!r}")
        if schedule not in SHAPES:
            raise ValueError(f"{'cfg' if kind == 'cdg' else 'slg'}_schedule must be one of {SHAPES}, got {schedule!r}")
        offset = 1.0 if kind == "cdg" else 0.0  # CFG's lam is scale - 1; the SD3 SLG term's lam is its scale
        if schedule == "cosine" and d_w > 0:   # not affine: no re-expression on a clipped range
            return [Segment(kind, scale - offset, start, end, "step", "cosine", d_w)]
        lo, hi = max(start, 1), min(end, num_inference_steps)
        if lo > hi:
            return []
        if schedule != "linear" or d_w <= 0:
            return [Segment(kind, scale - offset, lo, hi, "step")]
        # The official ramp is affine in the step, so on [lo, hi] it is the same ramp re-centred.
        at = [scale + d_w * (1 - 2 * ((k - start) / (end - start) if end > start else 0.0)) for k in (lo, hi)]
        if hi == lo:
            return [Segment(kind, at[0] - offset, lo, hi, "step")]
        return [Segment(kind, (at[0] + at[1]) / 2 - offset, lo, hi, "step", "linear", (at[0] - at[1]) / 2)]

    segments = []
    if guidance_scale > 1:
        segments += segment("cdg", "cfg_guidance", guidance_scale, cfg_guidance_start, cfg_guidance_end,
                            cfg_schedule, cfg_d_w)
    if use_segmented_guidance:
        slg = segment("cag", "skip_layer_guidance", skip_layer_guidance_scale, skip_layer_guidance_start,
                      skip_layer_guidance_end, slg_schedule, slg_d_w)
        if has_skip_layers:
            segments += slg
        elif slg and guidance_scale > 1:
            logger.warning("use_segmented_guidance=True without skip_guidance_layers adds no skip-layer guidance "
                           "(as in the official pipeline); pass e.g. skip_guidance_layers=[7, 8, 9]")
        elif slg:
            raise ValueError("use_segmented_guidance with guidance_scale <= 1 needs skip_guidance_layers "
                             "(the official pipeline fails here); pass e.g. skip_guidance_layers=[7, 8, 9]")
    return GuidanceSchedule(tuple(segments))


class StableDiffusion3SGGPipeline(StableDiffusion3Pipeline):
    """StableDiffusion3Pipeline with weak-to-strong segmented guidance (SGG).

    Build it from a loaded pipe with ``StableDiffusion3SGGPipeline(**pipe.components)`` (the same
    modules; ``from_pipe`` would cast them to float32 unless given ``torch_dtype``).

    Arguments and defaults are the official SGG pipeline's (``sd3/sd3_pipeline.py``), and every call it
    accepts gives its latents (`official_sd3_schedule` has the rule). Its quirks, kept:

    - the defaults are plain CFG: ``guidance_scale=7.0`` on steps 1..28, ``use_segmented_guidance=False``,
      ``skip_guidance_layers=None``; so ``pipe(prompt)`` equals diffusers' StableDiffusion3Pipeline;
    - step ranges are 1-indexed and inclusive, and ends past the run are accepted: the default
      ``cfg_guidance_end=28`` and ``skip_layer_guidance_end=28`` mean "to the end" at 28 steps or fewer,
      but stop at step 28 of a 50-step run; a 'linear' scale ramps over the nominal range;
    - skip-layer guidance (scale 2.8 on steps 1..28 by default) needs both ``use_segmented_guidance=True``
      and ``skip_guidance_layers`` (SD3.5-Medium: [7, 8, 9]); without the blocks it is off (and a
      warning says so) while CFG is on, and an error while CFG is off (the official code fails there).

    The paper's setting is one argument: ``guidance_schedule=GuidanceSchedule.sd3_paper(28)`` with
    ``skip_guidance_layers=[7, 8, 9]`` (CFG 4.5 on 1..14, skip-layer guidance 3.0 on 15..28).
    ``guidance_schedule`` replaces all the guidance arguments with any GuidanceSchedule (its 'cag'
    segments use the skip-layer pass). With precomputed embeddings, ``num_images_per_prompt`` repeats
    each prompt's embeddings as diffusers does for prompts it encodes. IP-Adapter inputs are not
    supported, and ``callback_on_step_end`` receives ``latents`` only.
    """

    _callback_tensor_inputs = ["latents"]

    @torch.no_grad()
    def __call__(
        self, prompt=None, prompt_2=None, prompt_3=None, height: Optional[int] = None, width: Optional[int] = None,
        num_inference_steps: int = 28, sigmas: Optional[Sequence[float]] = None, guidance_scale: float = 7.0,
        cfg_guidance_start: int = 1, cfg_guidance_end: int = 28, use_segmented_guidance: bool = False,
        skip_guidance_layers: Optional[Sequence[int]] = None, skip_layer_guidance_scale: float = 2.8,
        skip_layer_guidance_start: int = 1, skip_layer_guidance_end: int = 28,
        cfg_schedule: str = "constant", cfg_d_w: float = 0.0, slg_schedule: str = "constant", slg_d_w: float = 0.0,
        guidance_schedule: Optional[GuidanceSchedule] = None, negative_prompt=None, negative_prompt_2=None,
        negative_prompt_3=None, num_images_per_prompt: int = 1, generator=None, latents: Optional[Tensor] = None,
        prompt_embeds: Optional[Tensor] = None, negative_prompt_embeds: Optional[Tensor] = None,
        pooled_prompt_embeds: Optional[Tensor] = None, negative_pooled_prompt_embeds: Optional[Tensor] = None,
        output_type: str = "pil", return_dict: bool = True, joint_attention_kwargs: Optional[dict] = None,
        clip_skip: Optional[int] = None, callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",), max_sequence_length: int = 256,
        mu: Optional[float] = None, branch_group=None,
    ):
        """The official SGG pipeline's call; `branch_group` (a process group of 2, or a BranchGroup) spreads
        each step's passes over two ranks (sgg_kernels.distributed.evaluate_branches); every rank of the
        group makes the same call and gets the same latents."""
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        self.check_inputs(prompt, prompt_2, prompt_3, height, width, negative_prompt=negative_prompt,
                          negative_prompt_2=negative_prompt_2, negative_prompt_3=negative_prompt_3,
                          prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                          pooled_prompt_embeds=pooled_prompt_embeds,
                          negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
                          callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs),
                          max_sequence_length=max_sequence_length)
        num_steps = len(sigmas) if sigmas is not None else num_inference_steps
        if guidance_schedule is None:
            guidance_schedule = official_sd3_schedule(
                num_steps, guidance_scale, cfg_guidance_start, cfg_guidance_end, use_segmented_guidance,
                skip_layer_guidance_scale, skip_layer_guidance_start, skip_layer_guidance_end, cfg_schedule, cfg_d_w,
                slg_schedule, slg_d_w, has_skip_layers=skip_guidance_layers is not None)
        schedules = None
        if isinstance(guidance_schedule, (list, tuple)):  # one per prompt: the union says what the call needs
            if branch_group is not None:
                raise ValueError("guidance_schedule as a list (one schedule per prompt) runs in one process; "
                                 "branch_group takes a single GuidanceSchedule")
            schedules = check_schedules(guidance_schedule)
            guidance_schedule = union(schedules)
        self._check_skip_layers(skip_guidance_layers, guidance_schedule)
        if branch_group is not None:
            as_branch_group(branch_group).rank()  # a bad group is refused before any pass
        self._guidance_scale, self._clip_skip = guidance_scale, clip_skip
        self._joint_attention_kwargs, self._interrupt = joint_attention_kwargs, False
        device = self._execution_device
        uses_uncond = any(seg.kind == "cdg" for seg in guidance_schedule.segments)
        lora_scale = (joint_attention_kwargs or {}).get("scale")
        prompt_embeds_in, negative_prompt_embeds_in = prompt_embeds, negative_prompt_embeds
        pooled_prompt_embeds_in, negative_pooled_prompt_embeds_in = pooled_prompt_embeds, negative_pooled_prompt_embeds
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = \
            self.encode_prompt(prompt, prompt_2, prompt_3, negative_prompt=negative_prompt,
                               negative_prompt_2=negative_prompt_2, negative_prompt_3=negative_prompt_3,
                               do_classifier_free_guidance=uses_uncond, prompt_embeds=prompt_embeds,
                               negative_prompt_embeds=negative_prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                               negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, device=device,
                               clip_skip=clip_skip, num_images_per_prompt=num_images_per_prompt,
                               max_sequence_length=max_sequence_length, lora_scale=lora_scale)
        if num_images_per_prompt > 1:  # encode_prompt repeats what it encodes, not what it was given
            given_embeds = (prompt_embeds_in, negative_prompt_embeds_in, pooled_prompt_embeds_in,
                            negative_pooled_prompt_embeds_in)
            prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = (
                e.repeat_interleave(num_images_per_prompt, dim=0) if passed is not None else e
                for e, passed in zip((prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,
                                     negative_pooled_prompt_embeds), given_embeds))
        given = latents
        latents = self.prepare_latents(prompt_embeds.shape[0], self.transformer.config.in_channels, height, width,
                                       prompt_embeds.dtype, device, generator, latents)
        if latents is given:
            latents = latents.clone()  # sampled in place; the caller's latents are left alone
        if schedules is not None:
            schedules = check_schedules(schedules, prompt_embeds.shape[0] // num_images_per_prompt)
        timesteps = self._timesteps(latents, num_inference_steps, sigmas, mu, device)
        stepper = FlowMatchGuidedStep(self.scheduler, guidance_schedule, device)
        self._num_timesteps = len(timesteps)
        inputs = {"cond": (prompt_embeds, pooled_prompt_embeds), "weak": (prompt_embeds, pooled_prompt_embeds),
                  "uncond": (negative_prompt_embeds, negative_pooled_prompt_embeds)}
        if uses_uncond:  # for one batched cond/uncond forward, negative first as in diffusers
            inputs["batched"] = (torch.cat([negative_prompt_embeds, prompt_embeds]),
                                 torch.cat([negative_pooled_prompt_embeds, pooled_prompt_embeds]))

        with self.progress_bar(total=len(timesteps)) as progress_bar:
            def on_step(i, t, latents):
                if callback_on_step_end is not None:
                    latents = callback_on_step_end(self, i, t, {"latents": latents}).pop("latents", latents)
                progress_bar.update()
                return latents

            if schedules is not None:
                tables = [FlowMatchGuidedStep(self.scheduler, s, device).tables for s in schedules]
                predict = partial(self._predict_rows, inputs=inputs, skip_layers=skip_guidance_layers)
                latents = denoise_per_prompt(tables, num_images_per_prompt, latents, timesteps, predict, on_step,
                                             lambda: self.interrupt)
            else:
                for i, t in enumerate(timesteps):
                    if self.interrupt:
                        continue
                    need_uncond, need_weak = stepper.needs(i)
                    cond, uncond, weak = self._predictions(latents, t, need_uncond, need_weak, inputs,
                                                           skip_guidance_layers, branch_group)
                    # A callback may keep the latents it is shown, so those steps write a new tensor.
                    latents = stepper.step(i, latents, cond, uncond, weak, in_place=callback_on_step_end is None)
                    latents = on_step(i, t, latents)

        if output_type == "latent":
            image = latents
        else:
            latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
            image = self.image_processor.postprocess(self.vae.decode(latents, return_dict=False)[0],
                                                     output_type=output_type)
        self.maybe_free_model_hooks()
        return StableDiffusion3PipelineOutput(images=image) if return_dict else (image,)

    def _predictions(self, latents: Tensor, t: Tensor, need_uncond: bool, need_weak: bool, inputs: dict,
                     skip_layers, branch_group) -> tuple:
        """cond, uncond and weak for one step (None where the step does not use it)."""
        def predict(branch):
            return self._predict(latents, t, inputs[branch], list(skip_layers) if branch == "weak" else None)

        branches = ("cond",) + ("uncond",) * need_uncond + ("weak",) * need_weak
        if branch_group is not None:
            preds = evaluate_branches(branch_group, branches, predict, latents)
        elif need_uncond:
            preds = dict(zip(("uncond", "cond"), self._predict(torch.cat([latents, latents]), t,
                                                               inputs["batched"]).chunk(2)))
        else:
            preds = {"cond": predict("cond")}
        if need_weak and "weak" not in preds:
            preds["weak"] = predict("weak")
        return preds["cond"], preds.get("uncond"), preds.get("weak")

    def _predict_rows(self, x: Tensor, t: Tensor, rows: Tensor, uncond_rows: Optional[slice], weak: bool,
                      inputs: dict, skip_layers) -> Tensor:
        """The transformer on prompt rows `rows` (negative rows `rows[uncond_rows]` first, when given) or,
        with weak, the skip-layer pass on them: for `denoise_per_prompt`."""
        embeds = [e[rows] for e in inputs["cond"]]
        if uncond_rows is not None:
            embeds = [torch.cat([neg[rows[uncond_rows]], e]) for neg, e in zip(inputs["uncond"], embeds)]
        return self._predict(x, t, tuple(embeds), list(skip_layers) if weak else None)

    def _predict(self, latents: Tensor, t: Tensor, inputs: tuple[Tensor, Tensor], skip_layers=None) -> Tensor:
        embeds, pooled = inputs
        return self.transformer(hidden_states=latents, timestep=t.expand(latents.shape[0]),
                                encoder_hidden_states=embeds, pooled_projections=pooled,
                                joint_attention_kwargs=self.joint_attention_kwargs, return_dict=False,
                                skip_layers=skip_layers)[0]

    def _timesteps(self, latents: Tensor, num_inference_steps: int, sigmas, mu, device) -> Tensor:
        """The scheduler's timesteps, with the resolution-dependent shift when it is configured (as diffusers)."""
        config = self.scheduler.config
        if config.get("use_dynamic_shifting", False) and mu is None:
            patch = self.transformer.config.patch_size
            seq_len = (latents.shape[2] // patch) * (latents.shape[3] // patch)
            mu = calculate_shift(seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                                 config.get("base_shift", 0.5), config.get("max_shift", 1.16))
        kwargs = {} if mu is None else {"mu": mu}
        return retrieve_timesteps(self.scheduler, num_inference_steps, device,
                                  sigmas=sigmas, **kwargs)[0]

    def _check_skip_layers(self, skip_layers: Optional[Sequence[int]], schedule: GuidanceSchedule) -> None:
        if not any(seg.kind == "cag" for seg in schedule.segments):
            return
        blocks = len(self.transformer.transformer_blocks)
        if not skip_layers or any(not isinstance(k, int) or not 0 <= k < blocks for k in skip_layers):
            raise ValueError(f"skip_guidance_layers must be block indices in [0, {blocks}) for the weak "
                             f"(skip-layer) pass, got {list(skip_layers) if skip_layers else skip_layers!r}")
