"""Branch-parallel sampling: each step's network evaluations spread over a group of 2 ranks.

    group = BranchGroup(dist.new_group([0, 1]))           # or a ProcessGroup of 2 ranks as it is
    out = sample(model, cond, schedule, noise=noise, null_cond=null, weak_model=weak, branch_group=group)

Every rank of the group calls :func:`sgg_kernels.sampler.sample` with the same arguments. At each
evaluation rank 0 runs cond and rank 1 the branch the plan needs: uncond at high noise, weak at low
noise. Where the step needs cond only, the cond batch is split in halves (``split_batch=True``) or
run whole on both ranks (``split_batch=False``); a step that needs all three predictions gives rank 0
cond plus the first half of weak and rank 1 uncond plus the second half (with ``split_batch=False``:
rank 0 cond + weak, rank 1 uncond). The predictions are exchanged with one ``all_gather`` per
evaluation, and every rank applies the same fused ``guided_step_``: the latents stay bitwise
identical on the ranks without a broadcast.

Exactness: a branch evaluated whole sees the same batch as in ``sample(..., batch_cond_uncond=False)``,
so with ``split_batch=False`` the result is bitwise equal to that call for any deterministic model.
A split batch is bitwise equal where the model's per-sample output does not depend on how many
samples share the batch. That is not true of every model: the demo's MLP on this CPU (MKL, one
thread) gives different bits for batches of 1-4 rows than for larger ones, and GPU GEMMs pick
kernels by batch size. The default ``batch_cond_uncond=True`` single-process call evaluates cond and
uncond as one batch of 2B, so it matches under the same condition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils import _pytree as pytree

from .evaluators import Evaluator

GROUP_SIZE = 2
# all_gather_into_tensor was renamed all_gather_single (torch 2.10 deprecates the old name).
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
BRANCHES = ("cond", "uncond", "weak")


@dataclass(frozen=True)
class BranchGroup:
    """A process group of 2 ranks for branch-parallel sampling (None: the default group)."""

    group: Optional[dist.ProcessGroup] = None
    split_batch: bool = True  # split cond-only (and three-prediction) steps' batches over the ranks

    def rank(self) -> int:
        """This process's rank in the group, after checking the group: initialised, 2 ranks, a member."""
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("branch_group needs torch.distributed initialised (init_process_group or torchrun)")
        size = dist.get_world_size(self.group)
        if size != GROUP_SIZE:
            raise ValueError(f"branch_group must hold exactly {GROUP_SIZE} ranks (one per guidance branch), "
                             f"got a group of {size}")
        rank = dist.get_rank(self.group)
        if rank < 0:
            raise ValueError("branch_group does not contain this process (rank "
                             f"{dist.get_rank()} of the world)")
        return rank


def as_branch_group(value: Any) -> BranchGroup:
    if isinstance(value, BranchGroup):
        return value
    if isinstance(value, dist.ProcessGroup):
        return BranchGroup(value)
    if value is dist.GroupMember.NON_GROUP_MEMBER:  # what new_group returns on ranks outside it
        raise ValueError(f"branch_group does not contain this process (rank {dist.get_rank()} of the world)")
    raise TypeError(f"branch_group must be a torch.distributed ProcessGroup or a BranchGroup, got "
                    f"{type(value).__name__}")


Piece = tuple[str, int, int]  # (branch, first row, end row) of the batch


def assign(branches: tuple[str, ...], batch: int, split_batch: bool) -> tuple[list[Piece], list[Piece]]:
    """The pieces rank 0 and rank 1 evaluate for one step needing `branches` (cond first).

    Identical lists mean both ranks run the same evaluation and nothing is exchanged."""
    half = (batch + 1) // 2
    if len(branches) == 1:
        if split_batch and batch > 1:
            return [("cond", 0, half)], [("cond", half, batch)]
        return [("cond", 0, batch)], [("cond", 0, batch)]
    if len(branches) == 2:
        return [(branches[0], 0, batch)], [(branches[1], 0, batch)]
    if split_batch:
        return [("cond", 0, batch), ("weak", 0, half)], [("uncond", 0, batch), ("weak", half, batch)]
    return [("cond", 0, batch), ("weak", 0, batch)], [("uncond", 0, batch)]


def _rows(value: Any, start: int, stop: int, batch: int, name: str) -> Any:
    """Rows [start, stop) of every tensor in a condition (a tensor, or dicts/tuples/lists of them)."""
    if (start, stop) == (0, batch):
        return value

    def cut(leaf):
        if not isinstance(leaf, Tensor):
            return leaf
        if leaf.dim() == 0 or leaf.shape[0] != batch:
            raise ValueError(f"to split the batch over the branch group, every tensor in {name} needs the batch "
                             f"size {batch} as its first dimension, got shape {list(leaf.shape)}; pass "
                             "BranchGroup(group, split_batch=False) to evaluate whole batches only")
        return leaf[start:stop]
    return pytree.tree_map(cut, value)


def exchange(group: BranchGroup, pieces: tuple[list[Piece], list[Piece]], outputs: list[Tensor],
             x: Tensor) -> list[list[Tensor]]:
    """Every rank's outputs, by one all_gather of equal-size buffers (the shorter one zero-padded)."""
    rows = [sum(stop - start for _, start, stop in p) for p in pieces]
    width = max(rows)
    mine = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
    if mine.shape[0] < width:
        mine = torch.cat([mine, mine.new_zeros((width - mine.shape[0], *x.shape[1:]))])
    gathered = x.new_empty((GROUP_SIZE * width, *x.shape[1:]))
    _all_gather(gathered, mine.contiguous(), group=group.group)
    result = []
    for r, rank_pieces in enumerate(pieces):
        sizes = [stop - start for _, start, stop in rank_pieces]
        result.append(list(gathered[r * width:r * width + rows[r]].split(sizes)))
    return result


def evaluate_branches(branch_group: Any, branches: tuple[str, ...], evaluate: Callable[[str], Tensor],
                      x: Tensor) -> dict[str, Tensor]:
    """Each prediction in `branches` (cond first), evaluated once over a group of 2 on whole batches
    (rank 0 cond, plus weak when all three are needed; rank 1 the other) and exchanged by one all_gather.

    For pipelines with their own loop (the SD3 drop-in): evaluate(branch) runs the network for one branch
    at the latents x, which every rank holds identically."""
    group = as_branch_group(branch_group)
    pieces = assign(branches, x.shape[0], split_batch=False)
    mine = pieces[group.rank()]
    outputs = [evaluate(branch) for branch, _, _ in mine]
    if pieces[0] == pieces[1]:
        return dict(zip(branches, outputs))
    by_rank = exchange(group, pieces, outputs, x)
    return {branch: out for rank_pieces, rank_outputs in zip(pieces, by_rank)
            for (branch, _, _), out in zip(rank_pieces, rank_outputs)}


class BranchParallelEvaluator(Evaluator):
    """The sampler's evaluator with the step's pieces spread over a BranchGroup (see the module doc)."""

    def __init__(self, branch_group: Any, model, weak_model, cond, null_cond, tables, check_finite):
        super().__init__(model, weak_model, cond, null_cond, tables, False, check_finite)
        self.group = as_branch_group(branch_group)
        self.rank = self.group.rank()

    def _piece(self, piece: Piece, x: Tensor, t: Tensor, where: str) -> Tensor:
        branch, start, stop = piece
        fn = self.weak_model if branch == "weak" else self.model
        cond, name = (self.null_cond, "null_cond") if branch == "uncond" else (self.cond, "cond")
        what = branch if (start, stop) == (0, x.shape[0]) else f"{branch} rows {start}:{stop}"
        return self._run(fn, x[start:stop], t, _rows(cond, start, stop, x.shape[0], name), where, what)

    def __call__(self, i: int, x: Tensor, t: Tensor, t_value: float, label: str = ""):
        plan = self.tables.plan
        branches = tuple(b for b, on in zip(BRANCHES, (True, plan.uncond[i], plan.weak[i])) if on)
        where = self.where(i, t_value, label)
        pieces = assign(branches, x.shape[0], self.group.split_batch)
        nfe = self.nfe
        outputs = [self._piece(p, x, t, where) for p in pieces[self.rank]]
        # Count what the step uses, as the single process does, not the redundant whole-cond runs.
        self.nfe = nfe + len(branches) * x.shape[0]
        if pieces[0] == pieces[1]:  # both ranks ran the same evaluation: nothing to exchange
            pieces, by_rank = pieces[:1], [outputs]
        else:
            by_rank = exchange(self.group, pieces, outputs, x)
        parts = {b: [] for b in branches}
        for rank_pieces, rank_outputs in zip(pieces, by_rank):
            for (branch, start, _), out in zip(rank_pieces, rank_outputs):
                parts[branch].append((start, out))
        preds = {b: torch.cat([o for _, o in sorted(p, key=lambda s: s[0])]) if len(p) > 1 else p[0][1]
                 for b, p in parts.items()}
        cond, uncond, weak = (preds.get(b) for b in BRANCHES)
        self.check(where, cond, uncond, weak)
        return cond, uncond, weak
