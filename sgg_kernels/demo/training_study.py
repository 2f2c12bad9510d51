"""Training-time W2S on the toy: the same network and budget trained with the plain flow-matching loss,
the Uncond (model guidance) objective and the Segmented (SGG) objective, then sampled *unguided*.

    python -m sgg_kernels.demo.training_study                      # both regimes
    python -m sgg_kernels.demo.training_study --regime shallow --steps 500

Every objective sees the same data, noise, t and label-dropout draws (one generator seed), so the
rows differ only by the objective. Samples are scored with the demo's metrics (sgg_kernels.demo.metrics)
against exact samples; the "exact" row is the sampling-noise floor.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..schedule import GuidanceSchedule
from ..training import OPERANDS, W2SLoss
from .__main__ import print_table, table_rows
from .models import TrainConfig, VelocityMLP, train_velocity_model
from .study import REGIMES, Method, Regime, run_study
from .toy import LeavesMixture

# The reference SiT settings (docs/training.md): lam 0.6 inside [0.2, 0.8], rho 0.2 below; the early exit
# sits halfway up the network, as block 4 of SiT-B/2's 12 is early in the trunk.
OBJECTIVES = {
    "plain": W2SLoss("none"),
    "uncond": W2SLoss("uncond", w_scale=0.6),
    "segmented": W2SLoss("segmented", w_scale=0.6, weak_loss_ratio=0.2, guidance_low=0.2, guidance_high=0.8),
}
# The leaves regimes (flow-matching velocity models); edm2-tree's log-density models are EDM2's recipe.
FLOW_REGIMES = tuple(name for name, regime in REGIMES.items() if isinstance(regime, Regime))
# The fixed point of v = u + lam * (v - v_null) is CFG at scale 1 / (1 - lam): 2.5 for lam = 0.6.
SAMPLING_SCALE = 2.5


class VelocityMLPWithExit(VelocityMLP):
    """The demo's MLP plus an early-exit velocity head after hidden layer `exit_after` (the Branch/Segmented head)."""

    def __init__(self, num_classes: int, width: int, layers: int):
        super().__init__(num_classes, width, layers)
        self.exit_after = layers // 2 - 1
        self.exit_head = nn.Linear(width, 2)
        self._exit: Tensor | None = None
        self.hidden[self.exit_after].register_forward_hook(self._keep_exit)

    def _keep_exit(self, module, inputs, output) -> None:
        self._exit = output

    def forward_with_exit(self, x: Tensor, t: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(v, v_mid): the final and the early-exit velocity from one pass."""
        v = self(x, t, labels)
        # the hook saw the layer's pre-activation; the trunk applies SiLU (and the class shift on layer 0)
        h = self._exit + (self.embed(labels) if self.exit_after == 0 else 0)
        return v, self.exit_head(nn.functional.silu(h))


def train_with_objective(toy: LeavesMixture, config: TrainConfig, loss_fn: W2SLoss) -> VelocityMLPWithExit:
    """The demo's flow-matching training (same data pool, optimiser and schedule), with loss_fn as the loss."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VelocityMLPWithExit(toy.num_classes, config.width, config.layers)
    needs = OPERANDS[loss_fn.weak_type]

    def objective(model, xt, t, labels, target, progress):
        v, v_mid = model.forward_with_exit(xt, t, labels)
        operands = {"weak": None, "mid": v_mid if "mid" in needs else None}
        if "weak" in needs:  # the unconditional prediction, under stop-gradient as in the reference
            with torch.no_grad():
                operands["weak"] = model(xt, t, model.null_labels(xt.shape[0]))
        return loss_fn(v, target, t, progress=progress, **operands)

    return train_velocity_model(toy, config, progress=False, model=model, loss_fn=objective)


def compare(regime_name: str, steps: int | None, num_steps: int, seed: int) -> list[tuple]:
    """Table rows: exact samples, then each objective sampled unguided, then the plainly trained model
    with the sampling-time guidance that each objective bakes in (for reference, at 2 NFE)."""
    regime = REGIMES[regime_name]
    toy = LeavesMixture(regime.toy)
    config = regime.model if steps is None else replace(regime.model, steps=steps)
    rows = []
    for name, loss_fn in OBJECTIVES.items():
        methods = [Method("none", "unguided", GuidanceSchedule())]
        if name == "plain":
            methods += [Method("cfg", f"sampled CFG s={SAMPLING_SCALE}", GuidanceSchedule.cfg(SAMPLING_SCALE)),
                        Method("interval", f"sampled CFG s={SAMPLING_SCALE} t in (0.2, 0.8]",
                               GuidanceSchedule.interval(SAMPLING_SCALE, 0.2, 0.8))]
        start = time.perf_counter()
        model = train_with_objective(toy, config, loss_fn)
        train_s = time.perf_counter() - start
        # weak_model is unused by these schedules (none and CFG); the model itself fills the slot.
        result = run_study(toy, model, model, methods, per_class=regime.per_class, num_steps=num_steps,
                           seed=seed, progress=False)
        for row, method in zip(result.rows[1:], methods):
            row.method, row.settings = f"trained {name}", f"{method.settings}, train {train_s:.0f} s"
        rows += table_rows(regime_name, result)[0 if not rows else 1:]
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sgg_kernels.demo.training_study", description=__doc__.splitlines()[0])
    p.add_argument("--regime", choices=(*FLOW_REGIMES, "both"), default="both")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the regime's main model's)")
    p.add_argument("--sample-steps", type=int, default=32, help="Euler steps per sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (see python -m sgg_kernels.demo --help)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in FLOW_REGIMES if args.regime == "both" else (args.regime,):
        rows += compare(name, args.steps, args.sample_steps, args.seed)
    print_table(rows)


if __name__ == "__main__":
    main()
