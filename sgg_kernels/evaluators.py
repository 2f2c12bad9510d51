"""Running the networks for one sampler step: which passes, on what batch, checked.

`Evaluator` runs the passes a step's plan needs (cond always, uncond and weak where the weights use
them), checks each prediction's shape, dtype and device against its input, and counts evaluations
in samples. The single-process sampler uses it as it is; `distributed.BranchParallelEvaluator`
spreads its passes over two ranks. Both import it from here, so the layers run one way.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

Model = Callable[[Tensor, Tensor, Any], Tensor]


def concat_conditions(cond: Any, null_cond: Any, what: str = "batch_cond_uncond=True") -> Any:
    """cond and null_cond stacked along dim 0, leaf by leaf (tensors, or dicts/tuples/lists of them)."""
    cond_leaves, cond_spec = pytree.tree_flatten(cond)
    null_leaves, null_spec = pytree.tree_flatten(null_cond)
    if cond_spec != null_spec:
        raise ValueError(f"{what} needs null_cond shaped like cond (the same keys, tuple lengths and nesting): "
                         f"cond is {_structure(cond)} but null_cond is {_structure(null_cond)}")

    def cat(a, b):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return torch.cat([a, b])
        if isinstance(a, Tensor) or isinstance(b, Tensor) or a != b:
            raise TypeError(f"{what} needs cond and null_cond with tensors in the same places (non-tensor "
                            "entries must be equal); pass batch_cond_uncond=False otherwise")
        return a
    return pytree.tree_unflatten([cat(a, b) for a, b in zip(cond_leaves, null_leaves)], cond_spec)


def _structure(value: Any) -> str:
    """A condition's shape in words, for errors: its dict keys or its container length."""
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def check_prediction(out: Any, x: Tensor, where: str, what: str) -> Tensor:
    """A model's output must be a tensor shaped, typed and placed like its input x."""
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{where}: the {what} prediction has shape {got}, expected {list(x.shape)} (the shape "
                         "of its input x)")
    if out.dtype != x.dtype:
        raise TypeError(f"{where}: the {what} prediction has dtype {out.dtype} but x is {x.dtype}; "
                        "give noise (or dtype) in the model's dtype")
    if out.device != x.device:
        raise ValueError(f"{where}: the {what} prediction is on {out.device} but x is on {x.device}; the model "
                         "must return its prediction on its input's device")
    return out


class Evaluator:
    """Runs the models for one step, checks their outputs and counts evaluations (in samples)."""

    def __init__(self, model, weak_model, cond, null_cond, tables, batch_cond_uncond, check_finite):
        self.model, self.weak_model, self.cond, self.null_cond = model, weak_model, cond, null_cond
        self.tables, self.batch, self.check_finite = tables, batch_cond_uncond, check_finite
        self.cond_and_null = None
        self.nfe = 0

    def _run(self, fn, x: Tensor, t: Tensor, cond: Any, where: str, what: str) -> Tensor:
        out = fn(x, t.expand(x.shape[0]), cond)
        self.nfe += x.shape[0]
        return check_prediction(out, x, where, what)

    def where(self, i: int, t_value: float, label: str = "") -> str:
        return f"step {i + 1}/{self.tables.num_steps}{label} (t={t_value:.4g}, {self.tables.active(i)})"

    def check_update(self, i: int, x: Tensor, t_value: float, label: str = "") -> None:
        """With check_finite, x after step i's guided update must be finite: the predictions were, so a
        non-finite x means the weights times the prediction differences overflowed x's dtype. Naming
        the step here keeps the next step from blaming the model's prediction at the overflowed x."""
        if self.check_finite and not bool(torch.isfinite(x).all()):
            lam_cdg, lam_cag = self.tables.weights[i].tolist()
            raise FloatingPointError(f"{self.where(i, t_value, label)}: the guided update made x non-finite from "
                                     f"finite predictions; weights (lam_cdg, lam_cag) = ({lam_cdg:.4g}, "
                                     f"{lam_cag:.4g}) times the prediction differences overflow {x.dtype}")

    def __call__(self, i: int, x: Tensor, t: Tensor, t_value: float, label: str = ""):
        """(cond, uncond or None, weak or None) at step i's plan, evaluated at (x, t)."""
        need_uncond, need_weak = self.tables.plan.uncond[i], self.tables.plan.weak[i]
        where = self.where(i, t_value, label)
        uncond = weak = None
        if need_uncond and self.batch:
            if self.cond_and_null is None:
                self.cond_and_null = concat_conditions(self.cond, self.null_cond)
            both = self._run(self.model, torch.cat([x, x]), t, self.cond_and_null, where,
                             "batched cond+uncond")
            cond, uncond = both.chunk(2)  # views: the op reads them in place
        else:
            cond = self._run(self.model, x, t, self.cond, where, "cond")
            if need_uncond:
                uncond = self._run(self.model, x, t, self.null_cond, where, "uncond")
        if need_weak:
            weak = self._run(self.weak_model, x, t, self.cond, where, "weak")
        self.check(where, cond, uncond, weak)
        return cond, uncond, weak

    def check(self, where: str, cond: Tensor, uncond: Optional[Tensor], weak: Optional[Tensor]) -> None:
        if self.check_finite:
            for name, v in (("cond", cond), ("uncond", uncond), ("weak", weak)):
                if v is not None and not bool(torch.isfinite(v).all()):
                    raise FloatingPointError(f"{where}: the {name} prediction has non-finite values")
