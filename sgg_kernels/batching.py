"""Mixed requests in one batch: continuous batching for guided sampling.

    engine = GuidanceEngine(model, weak_model=weak)
    a = engine.submit(Request(cond_a, GuidanceSchedule.sgg(4.5, 2.0, 0.75), shape=(1, 16), null_cond=null_a))
    b = engine.submit(Request(cond_b, GuidanceSchedule.cfg(4.5), shape=(2, 16), null_cond=null_b, solver="heun"))
    while engine.step():          # one evaluation of every running request per step
        ...                       # submit more here: they join at the next step
    a.result().x, b.result().x    # each equals sample() on that request alone

Every request keeps its own schedule, grid, solver, conditions and noise, as `sample()` takes them.
Each engine step evaluates every running request once (a Heun step takes two engine steps), with one
forward per pass over only the rows that need it (see `batch_planner`), then one fused
`guided_step_` per operand class. Requests join and leave at step boundaries; requests whose samples
or conditions cannot share a batch (another sample shape, dtype, device or condition layout) run in
separate buckets, each stepped once per engine step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .batch_planner import RequestPosition, StepPlan, apply_update, plan_step
from .batch_rows import bucket_key, concat_rows, take_rows
from .evaluators import Model, check_prediction
from .sampler import SOLVERS, SampleOutput, prepare
from .schedule import GuidanceSchedule

# Euler-Maruyama is sample()'s alone: its per-request step noise is not batched here (yet).
ENGINE_SOLVERS = ("euler", "heun")


@dataclass
class Request:
    """One sampling request, in `sample()`'s terms (see its docstring); `name` labels its errors."""

    cond: Any
    schedule: GuidanceSchedule
    null_cond: Any = None
    noise: Optional[Tensor] = None
    shape: Optional[Sequence[int]] = None
    generator: Optional[torch.Generator] = None
    timesteps: Union[Tensor, Sequence[float], None] = None
    num_steps: int = 28
    grid: str = "uniform"
    shift: float = 3.0
    solver: str = "euler"
    device: Union[torch.device, str, None] = None
    dtype: Optional[torch.dtype] = None
    name: Optional[str] = None


@dataclass(eq=False)
class RequestHandle:
    """What `submit` returns: the request's progress, and its result once done."""

    name: str
    position: RequestPosition
    x: Tensor
    cond: Any
    null_cond: Any
    nfe: int = 0
    x_euler: Optional[Tensor] = None   # a Heun step's Euler point, between predictor and corrector
    error: Optional[BaseException] = None
    _result: Optional[SampleOutput] = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self._result is not None or self.error is not None

    def result(self) -> SampleOutput:
        """The request's `SampleOutput`, as `sample()` returns it; raises what stopped the request."""
        if self.error is not None:
            raise self.error
        if self._result is None:
            raise RuntimeError(f"request {self.name} is at step {self.position.step} of "
                               f"{self.position.tables.num_steps}: step the engine until it is done")
        return self._result


class GuidanceEngine:
    """Continuous batching of guided sampling requests over one model (and optionally a weak model).

    `max_rows` caps the rows of a bucket's batch: requests wait, in arrival order, until they fit.
    `batch_cond_uncond` runs cond and uncond rows as one forward, as `sample()` does by default.
    `check_finite` stops a request (not the batch) whose predictions or update are non-finite.
    `evaluations` counts the sample-evaluations run, over all passes and buckets.
    """

    position_type = RequestPosition  # what tracks a request's step; its `needs` decides the passes

    def __init__(self, model: Model, weak_model: Optional[Model] = None, *, max_rows: Optional[int] = None,
                 batch_cond_uncond: bool = True, check_finite: bool = False, progress: bool = False):
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
            raise ValueError(f"max_rows must be a positive int or None, got {max_rows!r}")
        self.model, self.weak_model, self.max_rows = model, weak_model, max_rows
        self.batch_cond_uncond, self.check_finite = batch_cond_uncond, check_finite
        self.waiting: list[tuple[Any, RequestHandle]] = []
        self.running: dict[Any, list[RequestHandle]] = {}
        self.evaluations = self.steps = self._submitted = 0
        self._bar = tqdm(total=0, disable=not progress, desc="sgg requests", unit="req")

    def submit(self, request: Request) -> RequestHandle:
        """Checks the request and queues it; it joins at the next `step()`. A bad request raises, naming
        the request and the field, and leaves the engine as it was."""
        if not isinstance(request, Request):
            raise TypeError(f"submit takes a Request, got {type(request).__name__}")
        name = repr(request.name) if request.name is not None else f"#{self._submitted}"
        try:
            if request.solver in SOLVERS and request.solver not in ENGINE_SOLVERS:
                raise ValueError(f"solver={request.solver!r} is not run by the batch engine, which runs "
                                 f"{ENGINE_SOLVERS}; sample() runs it")
            x, tables = prepare(request.cond, request.schedule, noise=request.noise, shape=request.shape,
                                generator=request.generator, null_cond=request.null_cond,
                                weak_model=self.weak_model, timesteps=request.timesteps,
                                num_steps=request.num_steps, grid=request.grid, shift=request.shift,
                                solver=request.solver, check_finite=self.check_finite, device=request.device,
                                dtype=request.dtype)
            if self.max_rows is not None and x.shape[0] > self.max_rows:
                raise ValueError(f"noise/shape has {x.shape[0]} samples, more than the engine's max_rows="
                                 f"{self.max_rows}")
            key = bucket_key(x, request.cond, request.null_cond if any(tables.plan.uncond) else None)
        except (ValueError, TypeError, FloatingPointError) as e:
            if "weak_model" in str(e) and self.weak_model is None:
                e = ValueError(f"{e}: this engine has no weak model (GuidanceEngine(model, weak_model=...))")
            raise type(e)(f"request {name}: {e}") from e
        handle = RequestHandle(name, self.position_type(tables, request.solver, x.shape[0]), x, request.cond,
                               request.null_cond)
        self._submitted += 1
        self.waiting.append((key, handle))
        self._bar.total += 1
        self._bar.refresh()
        return handle

    @property
    def idle(self) -> bool:
        return not self.waiting and not any(self.running.values())

    @torch.no_grad()
    def step(self) -> bool:
        """Admits waiting requests that fit, evaluates every running request once and applies its update.
        Returns whether any request is still waiting or running."""
        self._admit()
        for key, handles in list(self.running.items()):
            if handles:
                self._step_bucket(handles)
            self.running[key] = [h for h in handles if not h.done]
        self.steps += 1
        return not self.idle

    def run(self) -> None:
        """Steps until every submitted request is done."""
        while self.step():
            pass

    def _admit(self) -> None:
        still_waiting = []
        for key, handle in self.waiting:
            bucket = self.running.setdefault(key, [])
            rows = sum(h.position.rows for h in bucket)
            fits = self.max_rows is None or rows + handle.position.rows <= self.max_rows
            if fits and not any(k == key for k, _ in still_waiting):  # arrival order within a bucket
                bucket.append(handle)
            else:
                still_waiting.append((key, handle))
        self.waiting = still_waiting

    def _step_bucket(self, handles: list[RequestHandle]) -> None:
        plan = plan_step([h.position for h in handles], handles[0].x.device)
        ordered = [handles[k] for k in plan.order]
        x_in = torch.cat([h.x_euler if h.position.correcting else h.x for h in ordered])
        x = x_in if not any(h.position.correcting for h in ordered) else torch.cat([h.x for h in ordered])
        cond, uncond, weak = self._evaluate(plan, ordered, x_in)
        x_euler = apply_update(plan, x, cond, uncond, weak)
        for h, (start, stop) in zip(ordered, plan.blocks):
            self._advance(h, x[start:stop], None if x_euler is None else x_euler[start:stop],
                          (cond, uncond, weak), plan, start, stop)

    def _evaluate(self, plan: StepPlan, ordered: list[RequestHandle], x_in: Tensor):
        """Every pass once, over the rows that need it: cond (all rows, with the uncond rows in the same
        forward under batch_cond_uncond), uncond and weak, each a contiguous range of the batch."""
        where = f"engine step {self.steps + 1}"
        u, w, rows = plan.uncond, plan.weak, plan.rows
        conds = concat_rows([h.cond for h in ordered])
        nulls = None
        if u.stop > u.start:
            in_uncond = [h for h, (start, _) in zip(ordered, plan.blocks) if u.start <= start < u.stop]
            nulls = concat_rows([h.null_cond for h in in_uncond])
        uncond = weak = None
        if nulls is not None and self.batch_cond_uncond:
            both_x, both_t = torch.cat([x_in, x_in[u]]), torch.cat([plan.t, plan.t[u]])
            both = self._run(self.model, both_x, both_t, concat_rows([conds, nulls]),
                             where, "batched cond+uncond")
            cond, uncond = both[:rows], both[rows:]
        else:
            cond = self._run(self.model, x_in, plan.t, conds, where, "cond")
            if nulls is not None:
                uncond = self._run(self.model, x_in[u], plan.t[u], nulls, where, "uncond")
        if w.stop > w.start:
            weak = self._run(self.weak_model, x_in[w], plan.t[w], take_rows(conds, w), where, "weak")
        return cond, uncond, weak

    def _run(self, fn: Model, x: Tensor, t: Tensor, cond: Any, where: str, what: str) -> Tensor:
        self.evaluations += x.shape[0]
        return check_prediction(fn(x, t, cond), x, where, what)

    def _advance(self, h: RequestHandle, x: Tensor, x_euler: Optional[Tensor], preds, plan: StepPlan,
                 start: int, stop: int) -> None:
        pos = h.position
        needs = pos.needs
        h.nfe += pos.rows * (1 + needs[0] + needs[1])
        if self.check_finite and not self._finite(h, x, preds, plan, start, stop):
            self._bar.update(1)
            return
        if pos.predicting:
            h.x_euler = x_euler
        h.x = x
        pos.advance()
        if pos.finished:
            tab = pos.tables
            h._result = SampleOutput(x=x.clone(), nfe=h.nfe, timesteps=tab.grid, weights=tab.weights)
            h.x = h.x_euler = None
            self._bar.update(1)

    def _finite(self, h: RequestHandle, x: Tensor, preds, plan: StepPlan, start: int, stop: int) -> bool:
        """check_finite for one request's rows: its predictions, then its update. A failure stops only it."""
        pos = h.position
        where = f"request {h.name}, step {pos.step + 1}/{pos.tables.num_steps} (t={pos.t_now():.4g})"
        used = (True, *pos.needs)
        for name, pred, off, use in zip(("cond", "uncond", "weak"), preds, (0, plan.uncond.start, plan.weak.start), used):
            if use and not bool(torch.isfinite(pred[start - off:stop - off]).all()):
                h.error = FloatingPointError(f"{where}: the {name} prediction has non-finite values")
                return False
        if not bool(torch.isfinite(x).all()):
            h.error = FloatingPointError(f"{where}: the guided update made x non-finite from finite predictions")
            return False
        return True


def sample_batch(model: Model, requests: Sequence[Request], weak_model: Optional[Model] = None,
                 **engine_options) -> list[SampleOutput]:
    """Runs `requests` together to completion; the i-th result equals `sample()` on the i-th request.
    Every request is checked before any network runs; a request stopped by check_finite raises."""
    engine = GuidanceEngine(model, weak_model, **engine_options)
    handles = [engine.submit(r) for r in requests]
    engine.run()
    return [h.result() for h in handles]
