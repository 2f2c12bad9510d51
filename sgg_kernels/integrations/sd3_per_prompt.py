"""One guidance schedule per prompt in a single SD3 call: each step's passes run only on the rows that
need them (`StableDiffusion3SGGPipeline(..., guidance_schedule=[...])`).

All prompts share the scheduler's sigmas, so every row is at the same step; what differs is which
passes a row's schedule uses there. The batch planner orders the rows so that the uncond rows and the
weak rows are each one contiguous range, the transformer runs once for cond plus uncond (negative
rows first, as diffusers batches them) and once for the skip-layer rows, and the fused op updates
each class of rows in place. The latents keep the prompts' order between steps (one gather and one
scatter of the latents per step where the order changes).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..batch_planner import RequestPosition, apply_update, plan_step
from ..schedule import GuidanceSchedule


def check_schedules(schedules: Sequence, prompts: Optional[int] = None) -> list[GuidanceSchedule]:
    """A list of one GuidanceSchedule per prompt, checked before any pass (the count once it is known)."""
    schedules = list(schedules)
    bad = [k for k, s in enumerate(schedules) if not isinstance(s, GuidanceSchedule)]
    if bad:
        raise TypeError(f"guidance_schedule[{bad[0]}] must be a GuidanceSchedule, got {type(schedules[bad[0]]).__name__}")
    if prompts is not None and len(schedules) != prompts:
        raise ValueError(f"guidance_schedule has {len(schedules)} schedules but the call has {prompts} prompts: "
                         "give one GuidanceSchedule per prompt")
    return schedules


def union(schedules: Sequence[GuidanceSchedule]) -> GuidanceSchedule:
    """A schedule with every segment of the list: what the call needs at all (negative prompts, skip layers)."""
    return GuidanceSchedule(tuple(seg for s in schedules for seg in s.segments))


def denoise_per_prompt(tables: Sequence, rows_per_prompt: int, latents: Tensor, timesteps: Tensor,
                       predict: Callable[[Tensor, Tensor, slice, Optional[slice], bool], Tensor],
                       on_step: Callable[[int, Tensor, Tensor], Tensor], interrupted: Callable[[], bool]) -> Tensor:
    """Runs the denoising loop with one set of `GuidanceTables` per prompt (on the scheduler's sigmas).

    predict(x, t, rows, uncond_rows, weak) evaluates the transformer for the given rows of the planned
    order (`rows` as a tensor of prompt rows): the cond rows, with uncond_rows of them also as negative
    rows first when given, or the skip-layer pass when weak. on_step(i, t, latents) -> latents is the
    pipeline's callback and progress."""
    positions = [RequestPosition(tab, "euler", rows_per_prompt) for tab in tables]
    device = latents.device
    for i, t in enumerate(timesteps):
        if interrupted():
            continue
        for pos in positions:
            pos.step = i
        plan = plan_step(positions, device)
        order = torch.cat([torch.arange(k * rows_per_prompt, (k + 1) * rows_per_prompt) for k in plan.order]).to(device)
        x = latents[order]  # a copy in the planned order: updated in place, then put back
        uncond = None
        if plan.uncond.stop > plan.uncond.start:
            both = predict(torch.cat([x[plan.uncond], x]), t, order, plan.uncond, False)
            uncond, cond = both[:plan.uncond.stop - plan.uncond.start], both[plan.uncond.stop - plan.uncond.start:]
        else:
            cond = predict(x, t, order, None, False)
        weak = predict(x[plan.weak], t, order[plan.weak], None, True) if plan.weak.stop > plan.weak.start else None
        apply_update(plan, x, cond, uncond, weak)
        latents = on_step(i, t, latents.index_copy(0, order, x))
    return latents
