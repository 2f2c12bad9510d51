"""Planning one engine step over a batch whose rows belong to different requests.

Each request brings its own schedule, grid, solver, conditions and current step, so two requests at
the same engine step may need different passes: SGG needs uncond at high noise and the weak model at
low noise. `plan_step` orders the requests so that every pass runs on one contiguous range of rows:

    rows:   | cond only | cond+uncond | cond+uncond+weak | cond+weak |
    uncond:             [--------------------------------)
    weak:                             [--------------------------------)

so each pass is one forward over exactly the rows that need it (no pass runs for a row whose step
does not use it), and its output rows line up with the batch with no gather. The four classes are
also the four ways to call the fused op (which operands are present), so the combine is one
`guided_step_` per non-empty class over contiguous views: no copies, at most four launches more
than a uniform batch. A request's rows are one block, and a block sees exactly the coefficients
that `sample()` uses for that request alone, so each request's result equals sampling it alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from .tables import GuidanceTables

# (needs uncond, needs weak) in batch order: uncond and weak rows then form one range each.
CLASSES = ((False, False), (True, False), (True, True), (False, True))
# The per-row tables a step sends to the device, in one host buffer and one copy: the model's t,
# (lam_cdg, lam_cag), the Euler step (a, b) and the in-place update's (a, b), all float32 as the
# single-request sampler holds them, each a contiguous [B] or [B, 2] part (the op takes contiguous ones).
TABLE_WIDTHS = (1, 2, 2, 2)


@dataclass
class RequestPosition:
    """Where one request stands: its tables, solver, rows, and the step and Heun stage it is at."""

    tables: GuidanceTables
    solver: str
    rows: int
    step: int = 0
    correcting: bool = False   # Heun: the next evaluation is the corrector's, at (x_euler, t_next)
    _host: Optional[tuple[Tensor, Tensor, Tensor]] = None

    def host_tables(self) -> tuple[Tensor, Tensor, Tensor]:
        """float32 on the host: t [N + 1], weights [N, 2] and Euler (a, b) [N, 2], the same values as the
        device tables (each a float64 -> float32 rounding)."""
        if self._host is None:
            self._host = (self.tables.grid.float(), self.tables.weights.cpu(), self.tables.euler.cpu())
        return self._host

    @property
    def needs(self) -> tuple[bool, bool]:
        """(uncond, weak) at the current step; a Heun corrector uses its step's plan too."""
        return self.tables.plan.uncond[self.step], self.tables.plan.weak[self.step]

    @property
    def predicting(self) -> bool:
        """This evaluation is a Heun predictor's: the update also yields the Euler point x_euler."""
        return not self.correcting and not self.tables.is_euler_step(self.step, self.solver)

    @property
    def finished(self) -> bool:
        return self.step == self.tables.num_steps

    def t_now(self) -> float:
        """The t the model sees at this evaluation (t_next for a Heun corrector)."""
        return self.tables.grid[self.step + self.correcting].item()

    def advance(self) -> None:
        """After this evaluation's update: to the corrector, or to the next step."""
        if self.predicting:
            self.correcting = True
        else:
            self.correcting, self.step = False, self.step + 1


@dataclass(frozen=True)
class Group:
    """Rows [start, stop) that share which operands the op reads; the Heun predictors among them are
    the last rows, [predict_start, stop)."""

    start: int
    stop: int
    uncond: bool
    weak: bool
    predict_start: int


@dataclass(frozen=True)
class StepPlan:
    """One engine step: the requests in batch order, each pass's rows, and the per-row tables.

    `order[k]` is the index (into the positions given to `plan_step`) of the request whose rows are
    `blocks[k]`. `t` [B], `weights` [B, 2] and `step` [B, 2] are float32 on the device: the model's t,
    (lam_cdg, lam_cag), and the in-place update's (a, b). `euler` [B, 2] holds the Euler coefficients
    that a Heun predictor's out-of-place update uses for x_euler.
    """

    order: tuple[int, ...]
    blocks: tuple[tuple[int, int], ...]
    uncond: slice
    weak: slice
    groups: tuple[Group, ...]
    t: Tensor
    weights: Tensor
    step: Tensor
    euler: Tensor

    @property
    def rows(self) -> int:
        return self.blocks[-1][1] if self.blocks else 0

    @property
    def evaluations(self) -> int:
        """Sample-evaluations this step runs: every row's cond, plus the uncond and weak rows."""
        return self.rows + (self.uncond.stop - self.uncond.start) + (self.weak.stop - self.weak.start)


def _sort_key(pos: RequestPosition) -> tuple[int, bool]:
    return CLASSES.index(pos.needs), pos.predicting


def plan_step(positions: Sequence[RequestPosition], device: torch.device) -> StepPlan:
    """The batch layout and tables for one evaluation of every unfinished request in `positions`."""
    live = [k for k, p in enumerate(positions) if not p.finished]
    order = sorted(live, key=lambda k: _sort_key(positions[k]))  # stable: arrival order within a class
    blocks, rows, groups = [], 0, []
    for k in order:
        blocks.append((rows, rows + positions[k].rows))
        rows += positions[k].rows
    for cls in CLASSES:
        members = [b for k, b in zip(order, blocks) if positions[k].needs == cls]
        if members:
            predictors = [b for k, b in zip(order, blocks) if positions[k].needs == cls and positions[k].predicting]
            start, stop = members[0][0], members[-1][1]
            groups.append(Group(start, stop, cls[0], cls[1], predictors[0][0] if predictors else stop))

    def span(flag: int) -> slice:
        hit = [g for g in groups if (g.uncond, g.weak)[flag]]
        return slice(hit[0].start, hit[-1].stop) if hit else slice(rows, rows)

    host = torch.empty(rows * sum(TABLE_WIDTHS), dtype=torch.float32)
    t_rows, weight_rows, euler_rows, step_rows = _parts(host, rows)
    for k, (start, stop) in zip(order, blocks):
        p = positions[k]
        t, weights, euler = p.host_tables()
        t_rows[start:stop] = t[p.step + p.correcting]
        weight_rows[start:stop] = weights[p.step]
        euler_rows[start:stop] = euler[p.step]
        heun = not p.tables.is_euler_step(p.step, p.solver)
        step_rows[start:stop] = euler[p.step] * torch.tensor([1.0, 0.5]) if heun else euler[p.step]
    t_rows, weight_rows, euler_rows, step_rows = _parts(host.to(device, non_blocking=True), rows)
    return StepPlan(tuple(order), tuple(blocks), span(0), span(1), tuple(groups), t_rows, weight_rows, step_rows,
                    euler_rows)


def apply_update(plan: StepPlan, x: Tensor, cond: Tensor, uncond: Optional[Tensor],
                 weak: Optional[Tensor]) -> Optional[Tensor]:
    """The guided update of every row of `x` (in the plan's order), in place: one `guided_step_` per
    class over contiguous views, so no prediction is copied and no row reads a branch it lacks.
    `uncond` and `weak` hold only the plan's uncond and weak rows. Returns the Heun predictors' Euler
    points (rows of a tensor shaped like x; None when no row predicts), computed before x changes."""
    x_euler = torch.empty_like(x) if any(g.predict_start < g.stop for g in plan.groups) else None
    for g in plan.groups:
        rows = slice(g.start, g.stop)
        u = uncond[g.start - plan.uncond.start:g.stop - plan.uncond.start] if g.uncond else None
        w = weak[g.start - plan.weak.start:g.stop - plan.weak.start] if g.weak else None
        if g.predict_start < g.stop:
            p, skip = slice(g.predict_start, g.stop), g.predict_start - g.start
            x_euler[p] = torch.ops.sgg.guided_step(x[p], cond[p], None if u is None else u[skip:],
                                                   None if w is None else w[skip:], plan.weights[p], plan.euler[p])
        torch.ops.sgg.guided_step_(x[rows], cond[rows], u, w, plan.weights[rows], plan.step[rows])
    return x_euler


def _parts(buffer: Tensor, rows: int) -> list[Tensor]:
    """The buffer's contiguous parts: t [B], then weights, Euler and step coefficients [B, 2] each."""
    parts = buffer.split([rows * w for w in TABLE_WIDTHS])
    return [parts[0]] + [part.view(rows, 2) for part in parts[1:]]
