"""Guidance schedules: which guidance, how strong, where on the noise axis.

A :class:`GuidanceSchedule` is a list of :class:`Segment`. Each segment adds one term to the step's
weights ``(lam_cdg, lam_cag)``; overlapping segments add. Strengths are the *extra* strength
``lam`` of ``v = v_c + lam * (v_c - v_weak)``. The constructors take each community's own scale:

==============================  ===================================  ===============
constructor argument            published form                       lam
==============================  ===================================  ===============
``cfg_scale`` / ``scale``       ``u + s * (c - u)`` (CFG, diffusers) ``s - 1``
``cag_scale`` / ``w``           ``weak + w * (c - weak)`` (EDM2 AG)  ``w - 1``
``skip_layer_guidance_scale``   ``... + s * (c - skip)`` (SD3 SLG)   ``s``
==============================  ===================================  ===============

Noise-level intervals are half-open, ``lo < t <= hi`` (t = 1 is noise), and a segment with
``lo = 0`` also holds at t = 0. Step intervals are 1-indexed and inclusive.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import Tensor

KINDS = ("cdg", "cag")
UNITS = ("t", "step")
SHAPES = ("constant", "linear", "cosine")
# The ops take strengths as float32: a strength finite in float64 but beyond this would become inf.
FLOAT32_MAX = torch.finfo(torch.float32).max


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Segment:
    """One guidance term: `kind` ('cdg' uses uncond, 'cag' the weak model), active on [lo, hi] in `unit`.

    shape 'linear' gives lam + d_w * (1 - 2p) and 'cosine' lam + d_w * cos(pi p), where p runs from 0
    at the segment's first step (highest t) to 1 at its last; a one-step segment has p = 0.
    """

    kind: str
    lam: float
    lo: float
    hi: float
    unit: str = "t"
    shape: str = "constant"
    d_w: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Segment.kind must be one of {KINDS}, got {self.kind!r}")
        if self.unit not in UNITS:
            raise ValueError(f"Segment.unit must be one of {UNITS}, got {self.unit!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"Segment.shape must be one of {SHAPES}, got {self.shape!r}")
        for name in ("lam", "lo", "hi", "d_w"):
            if not _is_real(getattr(self, name)):
                raise ValueError(f"Segment.{name} must be a real number, got {getattr(self, name)!r}")
            if not isinstance(getattr(self, name), (int, float)):  # a Fraction or a numpy scalar: torch takes floats
                object.__setattr__(self, name, float(getattr(self, name)))
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"Segment.{name} must be finite, got {getattr(self, name)}")
        if self.d_w < 0:
            raise ValueError(f"Segment.d_w must be >= 0, got {self.d_w}")
        if self.lam > FLOAT32_MAX:
            raise ValueError(f"Segment.lam={self.lam:.4g} is beyond float32's largest value {FLOAT32_MAX:.4g} "
                             "(the ops take strengths as float32)")
        if self.lam + self.d_w > FLOAT32_MAX:
            raise ValueError(f"Segment's peak strength lam + d_w = {self.lam + self.d_w:.4g} is beyond float32's "
                             f"largest value {FLOAT32_MAX:.4g} (the ops take strengths as float32)")
        if self.lam - self.d_w < -1:
            raise ValueError(f"Segment strength reaches {self.lam - self.d_w} < -1 (a scale below 0), which "
                             "extrapolates past the weak prediction")
        if self.lo > self.hi:
            raise ValueError(f"Segment interval has lo={self.lo} > hi={self.hi}")
        if self.unit == "t" and not (0 <= self.lo and self.hi <= 1):
            raise ValueError(f"Segment noise interval [{self.lo}, {self.hi}] is outside [0, 1]")
        if self.unit == "step" and (self.lo != int(self.lo) or self.hi != int(self.hi) or self.lo < 1):
            raise ValueError(f"Segment step interval [{self.lo}, {self.hi}] must be whole steps from 1")

    def strengths(self, timesteps: Tensor) -> Tensor:
        """float64 [N]: this segment's lam at each step (0 where inactive).

        A t interval is compared in the timesteps' own dtype, so that float32 t = 0.8 counts as 0.8."""
        n = timesteps.numel()
        if self.unit == "step":
            if self.hi > n:
                raise ValueError(f"{self} ends at step {int(self.hi)} but the grid has {n} steps")
            pos, lo, hi = torch.arange(1, n + 1, dtype=torch.float64), self.lo, self.hi
            active = (pos >= lo) & (pos <= hi)
            p = (pos - lo) / (hi - lo) if hi > lo else torch.zeros(n, dtype=torch.float64)
        else:
            pos = timesteps.to(torch.float64)
            lo, hi = (torch.tensor(v, dtype=timesteps.dtype).item() for v in (self.lo, self.hi))
            active = ((pos > lo) | ((pos == 0) & (lo == 0))) & (pos <= hi)
            p = (hi - pos) / (hi - lo) if hi > lo else torch.zeros(n, dtype=torch.float64)
        if self.shape == "linear":
            lam = self.lam + self.d_w * (1 - 2 * p)
        elif self.shape == "cosine":
            lam = self.lam + self.d_w * torch.cos(math.pi * p)
        else:
            lam = torch.full((n,), self.lam, dtype=torch.float64)
        return torch.where(active, lam, torch.zeros((), dtype=torch.float64))


@dataclass(frozen=True)
class EvaluationPlan:
    """Per step, whether the unconditional and the weak-model predictions are needed."""

    uncond: tuple[bool, ...]
    weak: tuple[bool, ...]

    @property
    def evaluations_per_sample(self) -> int:
        """Network evaluations per sample: cond at every step, plus what the schedule uses."""
        return len(self.uncond) + sum(self.uncond) + sum(self.weak)


def _as_timesteps(timesteps: Union[Tensor, Sequence[float]]) -> Tensor:
    """A CPU copy in the caller's floating dtype (Python floats: float64)."""
    t = timesteps.detach().cpu() if isinstance(timesteps, Tensor) else torch.as_tensor(timesteps, dtype=torch.float64)
    if not t.is_floating_point():
        t = t.double()
    if t.dim() != 1:
        raise ValueError(f"timesteps must be 1-D (each step's current t), got shape {list(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool(((t < 0) | (t > 1)).any()):
        raise ValueError("timesteps must be finite noise levels in [0, 1] (t = 1 is noise)")
    return t


def _check_scale(name: str, value: float, minimum: float = 0.0) -> float:
    """A finite real number in [minimum, float32's largest value], the range the ops' float32 strengths hold."""
    if not _is_real(value) or not math.isfinite(value) or not minimum <= value <= FLOAT32_MAX:
        raise ValueError(f"{name} must be a finite number in [{minimum:g}, {FLOAT32_MAX:.4g}] (the ops take "
                         f"strengths as float32), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class GuidanceSchedule:
    """A sum of guidance segments; `weights()` gives the per-step (lam_cdg, lam_cag) table.

    Noise levels follow flow matching, x_t = (1 - t) x0 + t eps: t = 1 is pure noise (the first step),
    t = 0 the data, and sampling runs t downwards (diffusers' schedulers call this t sigma). A segment
    on lo < t <= hi is active while the noise is in that range, so a high interval acts early in
    sampling; step intervals count from step 1, the one at t = 1. Other conventions: docs/schedules.md.
    """

    segments: tuple[Segment, ...] = ()

    def __post_init__(self):
        segments = self.segments
        if not isinstance(segments, (tuple, list)) or not all(isinstance(s, Segment) for s in segments):
            raise TypeError(f"GuidanceSchedule.segments must be a tuple of Segment, got {segments!r}")
        object.__setattr__(self, "segments", tuple(segments))  # a list becomes the (hashable) tuple form

    def __add__(self, other: "GuidanceSchedule") -> "GuidanceSchedule":
        if not isinstance(other, GuidanceSchedule):
            return NotImplemented
        return GuidanceSchedule(self.segments + other.segments)

    def weights(self, timesteps: Union[Tensor, Sequence[float]]) -> Tensor:
        """float32 [N, 2] of (lam_cdg, lam_cag) for steps whose current noise levels are `timesteps`.

        Overlapping segments of one kind add; a sum beyond float32's range is refused, naming the step
        and the segments, rather than becoming inf in the table."""
        t = _as_timesteps(timesteps)
        table = torch.zeros(t.numel(), 2, dtype=torch.float64)
        for seg in self.segments:
            table[:, KINDS.index(seg.kind)] += seg.strengths(t)
        over = table.abs() > FLOAT32_MAX
        if bool(over.any()):
            step, column = over.nonzero()[0].tolist()
            kind = KINDS[column]
            summed = [seg for seg in self.segments if seg.kind == kind and seg.strengths(t)[step] != 0]
            raise ValueError(f"at step {step + 1} (t={t[step].item():.4g}) the overlapping {kind} segments sum to "
                             f"lam_{kind} = {table[step, column].item():.4g}, beyond float32's largest value "
                             f"{FLOAT32_MAX:.4g} (the ops take strengths as float32): {summed}")
        return table.to(torch.float32)

    def plan(self, timesteps: Union[Tensor, Sequence[float]]) -> EvaluationPlan:
        """Which predictions each step needs: uncond where lam_cdg != 0, weak where lam_cag != 0."""
        needed = self.weights(timesteps) != 0
        return EvaluationPlan(tuple(needed[:, 0].tolist()), tuple(needed[:, 1].tolist()))

    # Plain-dict form, for configs (JSON): {"segments": [{"kind": ..., "lam": ..., ...}, ...]}.
    def to_dict(self) -> dict:
        """This schedule as plain JSON-ready data; `from_dict` inverts it."""
        return {"segments": [dict(vars(seg)) for seg in self.segments]}

    @classmethod
    def from_dict(cls, data: dict) -> "GuidanceSchedule":
        """The schedule that `to_dict` gave; each segment is checked as when built directly."""
        if not isinstance(data, dict) or not isinstance(data.get("segments"), (list, tuple)):
            raise ValueError(f"a schedule dict needs a 'segments' list, got {data!r}")
        fields = set(Segment.__dataclass_fields__)
        for seg in data["segments"]:
            if not isinstance(seg, dict) or not set(seg) <= fields:
                raise ValueError(f"each segment must be a dict with keys from {sorted(fields)}, got {seg!r}")
        return cls(tuple(Segment(**seg) for seg in data["segments"]))

    @classmethod
    def sd3_paper(cls, num_inference_steps: int = 28) -> "GuidanceSchedule":
        """The paper's SD3/SD3.5 setting: CFG 4.5 on steps 1..N//2, skip-layer guidance 3.0 on N//2+1..N
        (1..14 and 15..28 at 28 steps), in `from_sd3_args`'s arguments."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 2:
            raise ValueError("num_inference_steps must be an int >= 2 (one step per segment), "
                             f"got {num_inference_steps!r}")
        half = num_inference_steps // 2
        return cls.from_sd3_args(num_inference_steps, guidance_scale=4.5, cfg_guidance_start=1, cfg_guidance_end=half,
                                 use_segmented_guidance=True, skip_layer_guidance_scale=3.0,
                                 skip_layer_guidance_start=half + 1, skip_layer_guidance_end=num_inference_steps)

    # Constructors, each in its community's own scale (see the module docstring).
    @classmethod
    def cfg(cls, scale: float) -> "GuidanceSchedule":
        """Classifier-free guidance at every step: u + scale * (c - u)."""
        return cls((Segment("cdg", _check_scale("scale", scale) - 1, 0.0, 1.0),))

    @classmethod
    def autoguidance(cls, w: float) -> "GuidanceSchedule":
        """EDM2 AutoGuidance at every step: weak + w * (c - weak)."""
        return cls((Segment("cag", _check_scale("w", w) - 1, 0.0, 1.0),))

    @classmethod
    def interval(cls, scale: float, t_lo: float, t_hi: float) -> "GuidanceSchedule":
        """Limited-interval CFG (Kynkaanniemi et al. 2024): CFG at `scale` where t_lo < t <= t_hi."""
        return cls((Segment("cdg", _check_scale("scale", scale) - 1, t_lo, t_hi),))

    @classmethod
    def sgg(cls, cfg_scale: float, cag_scale: float, boundary: float) -> "GuidanceSchedule":
        """SGG: CFG at `cfg_scale` where t > boundary, weak-model guidance at `cag_scale` where t <= boundary."""
        if not 0 <= boundary <= 1:
            raise ValueError(f"boundary must lie in [0, 1], got {boundary}")
        return cls((Segment("cdg", _check_scale("cfg_scale", cfg_scale) - 1, boundary, 1.0),
                    Segment("cag", _check_scale("cag_scale", cag_scale) - 1, 0.0, boundary)))

    @classmethod
    def from_sd3_args(
        cls,
        num_inference_steps: int = 28,
        guidance_scale: float = 4.5,
        cfg_guidance_start: int = 1,
        cfg_guidance_end: int = 14,
        use_segmented_guidance: bool = True,
        skip_layer_guidance_scale: float = 3.0,
        skip_layer_guidance_start: int = 15,
        skip_layer_guidance_end: int = 28,
        cfg_schedule: str = "constant",
        cfg_d_w: float = 0.0,
        slg_schedule: str = "constant",
        slg_d_w: float = 0.0,
    ) -> "GuidanceSchedule":
        """The official SD3/SD3.5 SGG pipeline's per-step rule (docs/schedules.md), with 1-indexed inclusive steps.

        CFG (lam = guidance_scale - 1) on [cfg_guidance_start, cfg_guidance_end] when guidance_scale > 1;
        skip-layer guidance (lam = skip_layer_guidance_scale) on its own range when use_segmented_guidance.
        The ranges are independent and may overlap. Schedules 'linear' (with d_w) and 'cosine' vary the
        scale across each range; 'constant' ignores d_w.
        """
        if not _is_count(num_inference_steps) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        _check_scale("guidance_scale", guidance_scale, minimum=-math.inf)  # <= 1 turns CFG off

        def steps(prefix: str, start, end) -> tuple[int, int]:
            for name, v in ((f"{prefix}_start", start), (f"{prefix}_end", end)):
                if not _is_count(v) or not 1 <= v <= num_inference_steps:
                    raise ValueError(f"{name} must be a step index in [1, {num_inference_steps}], got {v!r}")
            if start > end:
                raise ValueError(f"{prefix}_start={start} is after {prefix}_end={end}")
            return start, end

        def shape(name: str, value: str, d_w: float) -> tuple[str, float]:
            if value not in SHAPES:
                raise ValueError(f"{name} must be one of {SHAPES}, got {value!r}")
            return value, (_check_scale(name.replace("schedule", "d_w"), d_w) if value != "constant" else 0.0)

        segments = []
        if guidance_scale > 1:
            lo, hi = steps("cfg_guidance", cfg_guidance_start, cfg_guidance_end)
            kind, d_w = shape("cfg_schedule", cfg_schedule, cfg_d_w)
            segments.append(Segment("cdg", guidance_scale - 1, lo, hi, "step", kind, d_w))
        if use_segmented_guidance:
            lo, hi = steps("skip_layer_guidance", skip_layer_guidance_start, skip_layer_guidance_end)
            kind, d_w = shape("slg_schedule", slg_schedule, slg_d_w)
            lam = _check_scale("skip_layer_guidance_scale", skip_layer_guidance_scale)
            segments.append(Segment("cag", lam, lo, hi, "step", kind, d_w))
        return cls(tuple(segments))
