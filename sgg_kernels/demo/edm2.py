"""EDM2's AutoGuidance toy (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself",
the 2-D example of NVlabs/edm2 ``toy_example.py``), rebuilt on this package with EDM2's constants.

- :class:`EDM2TreeMixture`: its two classes of recursive trees of Gaussians, from the same constants and
  random draws (numpy ``RandomState(2)``, consumed in EDM2's order), as a :class:`ClassMixture` with an
  exact density, velocity and denoiser. Class 0 is EDM2's "A" (growing towards 45 degrees), 1 its "B".
- :class:`LogDensityMLP`: its network, a magnitude-preserving MLP whose output is an unnormalised
  log-density of x at noise level sigma; the score is its gradient, the denoiser ``x + sigma^2 score``.
- :func:`train_score_model`: exact score matching, ``sigma^2 |s_exact - s_net|^2`` at lognormal sigma,
  Adam with EDM2's inverse-square-root learning rate, and EDM2's power-function EMA of the weights.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .models import cached_model
from .toy import ClassMixture

CACHE_VERSION = 1  # bump when training changes in a way the config does not capture


@dataclass(frozen=True)
class EDM2TreeConfig:
    """EDM2's ``gt()`` constants: 7 levels, 8 Gaussians a branch, its seed, origin and anisotropic scale."""

    seed: int = 2
    depth: int = 7
    per_branch: int = 8
    origin: tuple[float, float] = (0.0030, 0.0325)
    scale: tuple[float, float] = (1.3136, 1.3844)


class EDM2TreeMixture(ClassMixture):
    """EDM2's two trees. Each component's weight is its branch length times 0.5^depth; the classes'
    probabilities are their total weights (EDM2 normalises the weights over the classes it selects)."""

    def __init__(self, config: EDM2TreeConfig = EDM2TreeConfig()):
        mu, cov, weight, label, depth = _grow_edm2_trees(config)
        self.depth = torch.tensor(depth)  # each component's branch level, 0 = the trunk
        weight, label = torch.tensor(weight, dtype=torch.float64), torch.tensor(label)
        mass = torch.stack([weight[label == c].sum() for c in range(2)])
        super().__init__(config, torch.tensor(np.array(mu)), torch.tensor(np.array(cov)),
                         (weight / mass[label]).log(), label, (mass / mass.sum()).log())


def _grow_edm2_trees(config: EDM2TreeConfig):
    """Means, covariances, weights, labels and levels of both trees, drawn as EDM2's recursion draws them."""
    rnd = np.random.RandomState(config.seed)
    scale, eye = np.asarray(config.scale), np.eye(2)
    mu, cov, weight, label, level = [], [], [], [], []

    def branch(cls: int, depth: int, pos: np.ndarray, angle: float) -> None:
        if depth >= config.depth:
            return
        direction = np.array([math.cos(angle), math.sin(angle)])
        length = 0.292 * 0.8 ** depth * (rnd.randn() * 0.2 + 1)
        thick = 0.2 * 0.8 ** depth / length  # cross-section relative to the along-branch std
        size = scale * length * 0.06
        along = np.outer(direction, direction)
        shape = (along + (eye - along) * thick ** 2) * np.outer(size, size)
        for f in np.linspace(0.07, 0.93, num=config.per_branch):
            mu.append((pos + direction * length * f) * scale)
            cov.append(shape)
            weight.append(length * 0.5 ** depth)
            label.append(cls)
            level.append(depth)
        for sign in (1, -1):  # EDM2 draws a child's turn just before growing that child
            turn = sign * 0.7 ** depth * (rnd.randn() * 0.2 + 1)
            branch(cls, depth + 1, pos + direction * length, angle + turn)

    origin = np.asarray(config.origin)
    branch(0, 0, origin, math.pi * 0.25)
    branch(1, 0, origin, math.pi * 1.25)
    return mu, cov, weight, label, level


def _unit_rows(w: Tensor, eps: float = 1e-4) -> Tensor:
    """Rows rescaled to norm sqrt(fan_in) (EDM2's forced weight normalisation)."""
    return w / (eps + w.norm(dim=1, keepdim=True) / math.sqrt(w.shape[1]))


class LogDensityMLP(nn.Module):
    """EDM2's toy network: input (x / sqrt(sigma_data^2 + sigma^2), log(sigma) / 4, 1), `layers` hidden
    magnitude-preserving layers of `width` without biases, output features y, and
    log p = gain * mean(y^2) / sigma - |x_in|^2 / 2 (gain starts at 0: a Gaussian of the data's scale)."""

    def __init__(self, width: int = 64, layers: int = 4, sigma_data: float = 0.5):
        super().__init__()
        self.sigma_data = sigma_data
        dims = [4] + [width] * (layers + 1)
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(o, i)) for i, o in zip(dims[:-1], dims[1:]))
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = sigma[:, None]
        x = x / (self.sigma_data ** 2 + s * s).sqrt()
        h = torch.cat((x, s.log() / 4, torch.ones_like(s)), 1)
        for i, w in enumerate(self.weights):
            if i:
                h = nn.functional.silu(h) / 0.596  # SiLU rescaled to keep unit magnitude
            h = h @ (_unit_rows(w) / math.sqrt(w.shape[1])).T
        return h.square().mean(1) * self.gain / sigma - 0.5 * x.square().sum(1)

    @torch.no_grad()
    def normalise_weights_(self) -> None:
        for w in self.weights:
            w.copy_(_unit_rows(w))

    def score(self, x: Tensor, sigma: Tensor, create_graph: bool = False) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(self(x, sigma).sum(), x, create_graph=create_graph)[0]

    def denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        return x + sigma[:, None] ** 2 * self.score(x, sigma)


@dataclass(frozen=True)
class ScoreTrainConfig:
    """EDM2's ``do_train`` settings; `cls` -1 trains on all classes (the unconditional model).

    Departure: targets come from a pool of `pool_size` triples drawn once (EDM2 draws every batch afresh);
    exact scores of ~2000 components are most of the cost otherwise."""

    cls: int = 0
    width: int = 64
    layers: int = 4
    iterations: int = 4096
    batch: int = 4096
    pool_size: int = 65536
    lr_ref: float = 1e-2
    lr_iterations: int = 512
    ema_std: float = 0.010
    p_mean: float = -2.3
    p_std: float = 1.5
    sigma_data: float = 0.5
    seed: int = 0


def power_ema_exponent(std: float) -> float:
    """The power-function EMA profile exponent for a relative std (EDM2 paper, eq. 126): the largest real
    root of g^3 + 7 g^2 + (16 - std^-2) g + (12 - std^-2)."""
    k = std ** -2
    return float(max(r.real for r in np.roots([1, 7, 16 - k, 12 - k]) if abs(r.imag) < 1e-9))


@functools.lru_cache(maxsize=1)
def score_pool(mixture: ClassMixture, cls: int, n: int, seed: int, p_mean: float, p_std: float):
    """score_targets from a generator seeded with `seed`; kept, as the main model and its AutoGuidance guide
    (same class and seed) train on the same pool."""
    config = ScoreTrainConfig(cls=cls, p_mean=p_mean, p_std=p_std)
    return score_targets(mixture, config, n, torch.Generator().manual_seed(seed))


def score_targets(mixture: ClassMixture, config: ScoreTrainConfig, n: int, gen: torch.Generator):
    """n training triples (x, sigma, exact score of p_sigma(x | cls) at x), float32."""
    if config.cls < 0:
        labels = torch.multinomial(mixture.class_log_prior.exp(), n, replacement=True, generator=gen)
    else:
        labels = torch.full((n,), config.cls)
    sigma = (torch.randn(n, generator=gen, dtype=torch.float64) * config.p_std + config.p_mean).exp()
    x = mixture.sample(labels, gen) + sigma[:, None] * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    score = (mixture.denoiser(x, sigma, torch.full((n,), config.cls)) - x) / sigma[:, None] ** 2
    return x.float(), sigma.float(), score.float()


def train_score_model(mixture: ClassMixture, config: ScoreTrainConfig, desc: str = "train",
                      progress: bool = True) -> LogDensityMLP:
    """The EMA of a LogDensityMLP trained by exact score matching on `mixture` (class `config.cls`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = LogDensityMLP(config.width, config.layers, config.sigma_data)
    ema = LogDensityMLP(config.width, config.layers, config.sigma_data).requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    x_pool, sigma_pool, target_pool = score_pool(mixture, config.cls, config.pool_size,
                                                 config.seed, config.p_mean, config.p_std)
    gen = torch.Generator().manual_seed(config.seed + 1)
    opt = torch.optim.Adam(net.parameters(), betas=(0.9, 0.99))
    exponent = power_ema_exponent(config.ema_std)
    for i in tqdm(range(config.iterations), desc=desc, leave=False, mininterval=0.5, disable=not progress):
        opt.param_groups[0]["lr"] = config.lr_ref / math.sqrt(max(i / config.lr_iterations, 1))
        idx = torch.randint(0, x_pool.shape[0], (config.batch,), generator=gen)
        x, sigma = x_pool[idx], sigma_pool[idx]
        net.normalise_weights_()
        loss = (sigma[:, None] ** 2 * (net.score(x, sigma, create_graph=True) - target_pool[idx]).square()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        beta = (1 - 1 / (i + 1)) ** (exponent + 1)
        with torch.no_grad():
            for p_ema, p_net in zip(ema.parameters(), net.parameters()):
                p_ema.lerp_(p_net, 1 - beta)
    return ema.eval()


def load_or_train_score_model(mixture: ClassMixture, config: ScoreTrainConfig, name: str, retrain: bool = False,
                              progress: bool = True) -> LogDensityMLP:
    """The trained model for (mixture, config), from the demo's cache when present unless `retrain`."""
    key = repr((CACHE_VERSION, type(mixture).__name__, asdict(mixture.config), asdict(config)))
    return cached_model(name, key, lambda: LogDensityMLP(config.width, config.layers, config.sigma_data),
                        lambda: train_score_model(mixture, config, f"train {name}", progress), retrain)
