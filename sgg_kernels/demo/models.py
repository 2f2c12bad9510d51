"""Small MLP velocity models for the toy, trained by flow matching on CPU and cached on disk.

A model is called as ``model(x, t, labels)`` (x float32 [B,2], t float32 [B], labels long [B]), the
form the project's sampler uses. Label ``num_classes`` is the null label: the main model is trained
with label dropout, so the same network gives the conditional and the unconditional velocity.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .toy import LeavesMixture

CACHE_VERSION = 1  # bump when training changes in a way the config does not capture
TIME_FREQUENCIES = 8


@dataclass(frozen=True)
class TrainConfig:
    """Network size and training run. `label_dropout` is the chance a label is replaced by the null label."""

    width: int = 64
    layers: int = 4
    steps: int = 2000
    batch: int = 1024
    lr: float = 2e-3
    label_dropout: float = 0.1
    seed: int = 0


class VelocityMLP(nn.Module):
    """x, Fourier features of t and a learned class embedding, through `layers` SiLU layers of `width`."""

    def __init__(self, num_classes: int, width: int, layers: int):
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes + 1, width)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(TIME_FREQUENCIES, dtype=torch.float32) / 2)
        dims = [2 + 2 * TIME_FREQUENCIES] + [width] * layers
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, 2)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        angles = t.to(x.dtype)[:, None] * self.freqs
        h = torch.cat((x, angles.sin(), angles.cos()), 1)
        for i, layer in enumerate(self.hidden):
            h = layer(h)
            if i == 0:  # the class enters by shifting the first hidden layer, like a bias per class
                h = h + self.embed(labels)
            h = nn.functional.silu(h)
        return self.out(h)

    def null_labels(self, n: int) -> Tensor:
        return torch.full((n,), self.num_classes, dtype=torch.long)


def flow_matching_loss(model: VelocityMLP, xt: Tensor, t: Tensor, labels: Tensor, target: Tensor,
                       progress: float) -> Tensor:
    """The plain objective: squared error to the target velocity, summed over x and y, mean over the batch."""
    return (model(xt, t, labels) - target).square().sum(1).mean()


def train_velocity_model(toy: LeavesMixture, config: TrainConfig, desc: str = "train", progress: bool = True,
                         model: VelocityMLP | None = None, loss_fn=flow_matching_loss) -> VelocityMLP:
    """Flow matching on the linear path: regress eps - x0 at x_t = (1-t) x0 + t eps, t ~ U(0, 1).

    `loss_fn(model, x_t, t, labels, target, progress)` is the objective (progress: the fraction of
    training done); any `model` given replaces a freshly seeded VelocityMLP."""
    gen = torch.Generator().manual_seed(config.seed)
    if model is None:
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, leaving the caller's RNG alone
            torch.manual_seed(config.seed)
            model = VelocityMLP(toy.num_classes, config.width, config.layers)
    # A fixed pool of 64 batches of exact samples, drawn once instead of at every step.
    pool_labels = torch.randint(0, toy.num_classes, (64 * config.batch,), generator=gen)
    pool = toy.sample(pool_labels, gen).float()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    for step in tqdm(range(config.steps), desc=desc, leave=False, mininterval=0.5, disable=not progress):
        idx = torch.randint(0, pool.shape[0], (config.batch,), generator=gen)
        x0, labels = pool[idx], pool_labels[idx]
        drop = torch.rand(config.batch, generator=gen) < config.label_dropout
        labels = torch.where(drop, toy.num_classes, labels)
        eps = torch.randn(config.batch, 2, generator=gen)
        t = torch.rand(config.batch, generator=gen)
        xt = (1 - t[:, None]) * x0 + t[:, None] * eps
        loss = loss_fn(model, xt, t, labels, eps - x0, step / config.steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval().requires_grad_(False)


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/sgg_kernels/demo, or ~/.cache/sgg_kernels/demo."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "sgg_kernels" / "demo"


def cached_model(name: str, key: str, build, train, retrain: bool = False) -> nn.Module:
    """`train()`'s model, cached in cache_dir() under `name` and a hash of `key`; `build()` makes an
    untrained one to load the cached weights into. `retrain` trains again and replaces the entry."""
    path = cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if path.exists() and not retrain:
        model = build()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval().requires_grad_(False)
    model = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written cache entry
    return model.eval().requires_grad_(False)


def load_or_train(toy: LeavesMixture, config: TrainConfig, name: str, retrain: bool = False,
                  progress: bool = True) -> VelocityMLP:
    """The trained model for (toy, config), from the cache when present unless `retrain`."""
    key = repr((CACHE_VERSION, asdict(toy.config), asdict(config)))
    return cached_model(name, key, lambda: VelocityMLP(toy.num_classes, config.width, config.layers),
                        lambda: train_velocity_model(toy, config, desc=f"train {name}", progress=progress), retrain)


class ExactVelocity(nn.Module):
    """The toy's ideal velocity behind the model interface (null label = all classes): the sanity check."""

    def __init__(self, toy: LeavesMixture):
        super().__init__()
        self.toy = toy
        self.num_classes = toy.num_classes

    def forward(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        labels = torch.where(labels == self.num_classes, -1, labels)
        return self.toy.velocity(x, t, labels).to(x.dtype)

    def null_labels(self, n: int) -> Tensor:
        return torch.full((n,), self.num_classes, dtype=torch.long)
