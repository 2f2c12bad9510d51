"""SGG as a diffusers guider: one `SGGGuider` for every modular pipeline that takes a ``guider``.

    from sgg_kernels import GuidanceSchedule
    from sgg_kernels.integrations.diffusers_guider import SGGGuider

    pipe.update_components(guider=SGGGuider(GuidanceSchedule.sd3_paper(28), skip_layers=[7, 8, 9]))

Needs the ``diffusers`` extra (diffusers >= 0.35, the modular guider API). At each step the guider
asks the pipeline for only the passes its weights use: the conditional one always, the unconditional
one where ``lam_cdg != 0`` and the weak one where ``lam_cag != 0``; it combines them with one
``torch.ops.sgg.guide`` call whose ``(lam_cdg, lam_cag)`` is a float32 tensor on the predictions'
device (cached per value, so a run copies each distinct pair to the device once).

The weak pass is the pipeline's own denoiser with ``skip_layers`` blocks skipped, or ``weak_model``,
a separate denoiser with the same call signature (AutoGuidance: a smaller or earlier checkpoint of
the same condition). Both are hooks armed for that one call and removed however it ends
(:mod:`.weak_pass`).

Schedules: step segments count the pipeline's steps from 1, inclusive (``from_sd3_args``,
``sd3_paper``); noise-level segments read t = the scheduler's sigma at the step, the package's one
t convention (the SD3 drop-in and the sampler use it too), so a boundary set exactly at a sigma puts
each step on the same side everywhere. Give the pipeline's scheduler (``scheduler=pipe.scheduler``)
and t is that sigma exactly, looked up by the step's timestep. Without it, t is recovered from the
timestep as float32(timestep / ``num_train_timesteps``): diffusers' flow-matching schedulers make
timesteps = float32(sigmas * 1000), and this recovers their float32 sigma except within one float32
step for about 2% of values (integer timesteps, as UniPC's, are off by up to 0.5 / 1000). Reading t
costs one host read of the step's timestep; schedules with step segments only never read it.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput

from .. import ops as _ops  # noqa: F401  (registers torch.ops.sgg.*)
from ..schedule import GuidanceSchedule
from .skip_layers import SkipLayers, normalize_skip_layers
from .weak_pass import arm_weak_pass, check_skip_layers, disarm

COND, UNCOND, WEAK = "pred_cond", "pred_uncond", "pred_weak"


class SGGGuider(BaseGuidance):
    """Weak-to-strong segmented guidance: ``cond + lam_cdg (cond - uncond) + lam_cag (cond - weak)``.

    Args:
        schedule: a `GuidanceSchedule`, or its `to_dict()` form (what the saved config holds).
        skip_layers: blocks skipped in the weak pass: indices into the denoiser's main block list, or a dict
            from block-list name to indices (`skip_layers.skip_layer_candidates` lists them).
        weak_model: a separate weak denoiser called exactly as the pipeline calls its own; not saved
            in the config (pass it again to `from_pretrained`).
        num_train_timesteps: without `scheduler`, t = float32(timestep / num_train_timesteps).
        scheduler: the pipeline's scheduler; noise-level segments then read its sigma exactly. Not
            saved in the config (pass it again to `from_pretrained`).
        enabled: when False every step is the conditional prediction alone.
    """

    _input_predictions = [COND, UNCOND, WEAK]

    def __init__(self, schedule: Union[GuidanceSchedule, dict], skip_layers: Optional[SkipLayers] = None,
                 weak_model: Optional[Callable] = None, num_train_timesteps: int = 1000, enabled: bool = True,
                 scheduler: Optional[Any] = None):
        super().__init__(0.0, 1.0, enabled)
        if isinstance(schedule, dict):
            schedule = GuidanceSchedule.from_dict(schedule)
        if not isinstance(schedule, GuidanceSchedule):
            raise TypeError(f"schedule must be a GuidanceSchedule or its to_dict() form, got {type(schedule).__name__}")
        if skip_layers is not None:
            skip_layers = normalize_skip_layers(skip_layers)
        if skip_layers is not None and weak_model is not None:
            raise ValueError("give skip_layers or weak_model for the weak pass, not both")
        if any(seg.kind == "cag" for seg in schedule.segments) and skip_layers is None and weak_model is None:
            raise ValueError("the schedule has weak-model ('cag') segments, so the weak pass needs skip_layers "
                             "(blocks of the denoiser to skip) or weak_model (a separate denoiser); neither was given")
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be a positive int, got {num_train_timesteps!r}")
        if scheduler is not None and not (hasattr(scheduler, "timesteps") and hasattr(scheduler, "sigmas")):
            raise TypeError(f"scheduler must be the pipeline's diffusers scheduler (with timesteps and sigmas), "
                            f"got {type(scheduler).__name__}")
        self.scheduler = scheduler
        self.schedule, self.skip_layers, self.weak_model = schedule, skip_layers, weak_model
        self.num_train_timesteps = num_train_timesteps
        self._reads_t = any(seg.unit == "t" for seg in schedule.segments)
        self._fits: Optional[int] = None           # the run length the schedule was checked against
        self._checked = weakref.WeakSet()          # denoisers whose skip_layers were checked
        self._lams = (0.0, 0.0)
        self._on_device: dict[tuple, Tensor] = {}
        self._armed: Optional[nn.Module] = None
        self.register_to_config(schedule=schedule.to_dict(), skip_layers=skip_layers,
                                num_train_timesteps=num_train_timesteps, enabled=enabled)

    # The step's plan: which passes, at what weights.
    def set_state(self, step: int, num_inference_steps: int, timestep: Optional[Tensor]) -> None:
        super().set_state(step, num_inference_steps, timestep)
        self._release()  # a weak pass armed in an earlier step whose call never came
        if num_inference_steps != self._fits:
            self._check_fits(num_inference_steps)
        if not 0 <= step < num_inference_steps:
            raise ValueError(f"step {step} is outside the run of {num_inference_steps} steps")
        if not self._enabled:
            self._lams = (0.0, 0.0)
            return
        t = 0.0
        if self._reads_t:
            if timestep is None:
                raise ValueError("the schedule has noise-level segments but the pipeline gave no timestep")
            t = self._sigma(step, timestep)
            if not 0 <= t <= 1:
                raise ValueError(f"step {step + 1}: t = timestep / num_train_timesteps = {t:.6g} is outside [0, 1]; "
                                 "set num_train_timesteps to the scheduler's")
        row = self.schedule.weights(torch.full((num_inference_steps,), t, dtype=torch.float64))[step]
        self._lams = (float(row[0]), float(row[1]))

    def _sigma(self, step: int, timestep) -> float:
        """The step's t: the scheduler's sigma at this timestep (see the module docstring)."""
        timestep = torch.as_tensor(timestep).reshape(-1)[:1].cpu()
        if self.scheduler is None:
            return float(timestep.float() / self.num_train_timesteps)
        timesteps = torch.as_tensor(self.scheduler.timesteps).cpu()
        match = (timesteps == timestep.to(timesteps.dtype)).nonzero()
        if len(match) == 0:
            raise ValueError(f"step {step + 1}: timestep {float(timestep):g} is not one of the scheduler's timesteps; "
                             "give SGGGuider the scheduler this pipeline runs (scheduler=pipe.scheduler)")
        return float(torch.as_tensor(self.scheduler.sigmas)[int(match[0, 0])])

    def _check_fits(self, num_inference_steps: int) -> None:
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        try:
            self.schedule.weights(torch.zeros(num_inference_steps, dtype=torch.float64))
        except ValueError as e:
            raise ValueError(f"the SGG schedule does not fit a run of {num_inference_steps} steps: {e}") from e
        self._fits = num_inference_steps

    def _passes(self) -> list[str]:
        lam_cdg, lam_cag = self._lams
        return [COND] + ([UNCOND] if lam_cdg != 0 else []) + ([WEAK] if lam_cag != 0 else [])

    @property
    def num_conditions(self) -> int:
        return len(self._passes())

    @property
    def is_conditional(self) -> bool:
        """Whether the pass being prepared (or the first, before any) uses the condition."""
        passes = self._passes()
        return passes[min(max(self._count_prepared - 1, 0), len(passes) - 1)] != UNCOND

    # Inputs per pass: tuple fields are (cond, uncond); the weak pass takes the conditional inputs.
    def prepare_inputs(self, data: dict[str, Any]) -> list:
        if UNCOND in self._passes() and not any(isinstance(v, tuple) and v[1] is not None for v in data.values()):
            self._no_negative_inputs()
        return [self._prepare_batch(data, 1 if name == UNCOND else 0, name) for name in self._passes()]

    def prepare_inputs_from_block_state(self, data, input_fields: dict[str, Union[str, tuple]]) -> list:
        if UNCOND in self._passes() and not any(
                isinstance(v, tuple) and getattr(data, v[1], None) is not None for v in input_fields.values()):
            self._no_negative_inputs()
        return [self._prepare_batch_from_block_state(input_fields, data, 1 if name == UNCOND else 0, name)
                for name in self._passes()]

    def _no_negative_inputs(self):
        raise ValueError(f"step {self._step + 1} uses the unconditional prediction (lam_cdg = {self._lams[0]:g}) "
                         "but the pipeline gave no negative inputs: pass negative_prompt_embeds (or a negative "
                         "prompt) to the pipeline")

    # The weak pass: armed for the denoiser's next call, removed after it in any case.
    def prepare_models(self, denoiser: nn.Module) -> None:
        if self.skip_layers is not None and denoiser not in self._checked:
            check_skip_layers(denoiser, self.skip_layers)
            self._checked.add(denoiser)
        self._count_prepared += 1
        passes = self._passes()
        if self._count_prepared > len(passes):
            raise RuntimeError(f"prepare_models called {self._count_prepared} times in a step of {len(passes)} passes")
        if passes[self._count_prepared - 1] == WEAK:
            arm_weak_pass(denoiser, self.skip_layers, self.weak_model)
            self._armed = denoiser

    def cleanup_models(self, denoiser: nn.Module) -> None:
        disarm(denoiser)
        self._release()

    def _release(self) -> None:
        if self._armed is not None:
            disarm(self._armed)
            self._armed = None

    def forward(self, pred_cond: Tensor, pred_uncond: Optional[Tensor] = None,
                pred_weak: Optional[Tensor] = None) -> GuiderOutput:
        lam_cdg, lam_cag = self._lams
        weights = self._weights_on(pred_cond.device)
        pred = torch.ops.sgg.guide(pred_cond, pred_uncond if lam_cdg != 0 else None,
                                   pred_weak if lam_cag != 0 else None, weights)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)

    def _weights_on(self, device: torch.device) -> Tensor:
        key = (device, self._lams)
        if key not in self._on_device:
            self._on_device[key] = torch.tensor(self._lams, dtype=torch.float32, device=device)
        return self._on_device[key]

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "lam_cdg": self._lams[0], "lam_cag": self._lams[1], "passes": self._passes()}

    def new(self, **kwargs) -> "SGGGuider":
        """A copy with the same config (and weak model), updated by `kwargs`."""
        return self.__class__.from_config(self.config, **{"weak_model": self.weak_model, "scheduler": self.scheduler,
                                                          **kwargs})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, subfolder=None, return_unused_kwargs=False,
                        weak_model: Optional[Callable] = None, scheduler: Optional[Any] = None, **kwargs):
        """The saved guider; `weak_model` and `scheduler` are not part of the config, so they are given again."""
        config, kwargs = cls.load_config(pretrained_model_name_or_path=pretrained_model_name_or_path,
                                         subfolder=subfolder, return_unused_kwargs=True, **kwargs)
        return cls.from_config(config, return_unused_kwargs=return_unused_kwargs, weak_model=weak_model,
                               scheduler=scheduler, **kwargs)
