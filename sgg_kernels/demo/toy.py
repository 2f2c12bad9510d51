"""The "leaves" toy: a 2-D class-conditional Gaussian mixture with an exact density and exact velocity.

Each class is a binary tree of straight branches, and each branch is a row of elongated Gaussians along
it. Every depth level carries the same share of the class's mass, so deeper levels are finer detail:
thinner, shorter branches with less mass per component.

Flow path ``x_t = (1 - t) x0 + t eps`` (t = 1 is noise). For one component N(mu, S),
``x_t ~ N((1 - t) mu, C)`` with ``C = (1 - t)^2 S + t^2 I``, and the component's velocity
``E[eps - x0 | x_t]`` is ``-mu + (t I - (1 - t) S) C^-1 (x_t - (1 - t) mu)`` (Gaussian conditioning;
finite at t = 0 and t = 1). The mixture's velocity averages these under the posterior over
components, which needs only each component's marginal density of x_t. All exact quantities are
float64 and use closed-form 2x2 inverses, chunked over points to bound memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Points per chunk. [CHUNK, K] float64 intermediates of ~4 MB for K ~ 1000 stay off the mmap path: chunks
# of 2048 measured 25% slower per point on this 2-core machine.
CHUNK = 512


@dataclass(frozen=True)
class LeavesConfig:
    """Shape of the toy: `classes` trees of `depth` levels below the root, `per_branch` Gaussians a branch."""

    classes: int = 2
    depth: int = 5
    per_branch: int = 4
    thickness: float = 0.06  # root branch's cross-section std, before scaling to unit variance
    seed: int = 0


class ClassMixture:
    """Gaussian mixture with component means `mu` [K,2], covariances `cov` [K,2,2], class ids `label` [K].

    `log_weight` [K] is each component's log-weight within its class, `class_log_prior` [C] each class's
    log-probability (classes may differ in mass). A class argument of -1 (or None) means the mixture of
    all classes (the unconditional distribution). `config` is what built the mixture (it keys the model cache).
    """

    def __init__(self, config, mu: Tensor, cov: Tensor, log_weight: Tensor, label: Tensor, class_log_prior: Tensor):
        self.config, self.num_classes = config, class_log_prior.numel()
        self.mu, self.cov, self.log_weight, self.label = mu, cov, log_weight, label
        self.class_log_prior = class_log_prior
        self._chol = torch.linalg.cholesky(self.cov)
        self._all = torch.arange(self.num_components)

    @property
    def num_components(self) -> int:
        return self.mu.shape[0]

    def components_of(self, cls: int) -> Tensor:
        return (self.label == cls).nonzero().squeeze(1)

    def sample(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Exact data samples x0 [N,2] (float64), one for each class label in `labels` [N]."""
        self._check_labels(labels, lowest=0)
        comp = torch.empty_like(labels)
        for c in range(self.num_classes):
            rows, ks = (labels == c).nonzero().squeeze(1), self.components_of(c)
            if rows.numel():
                weights = self.log_weight[ks].exp()
                pick = torch.multinomial(weights, rows.numel(), replacement=True, generator=generator)
                comp[rows] = ks[pick]
        z = torch.randn(labels.shape[0], 2, 1, dtype=torch.float64, generator=generator)
        return self.mu[comp] + (self._chol[comp] @ z).squeeze(2)

    def _marginal_logits(self, x: Tensor, t: Tensor, labels: Tensor):
        """Per point and component: log(weight * N(x; (1-t) mu, C)), plus what the velocity needs.

        The components are `ks` (returned), only the class's own when every point has that class (it halved
        the cost of a 2-class training pool); the other classes' components are masked with -inf."""
        ks = self.components_of(int(labels[0])) if bool((labels == labels[0]).all()) and labels[0] >= 0 else self._all
        mu, cov, label = self.mu[ks], self.cov[ks], self.label[ks]
        x, t = x.to(torch.float64), t.to(torch.float64)[:, None]
        s11, s12, s22 = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
        a, b, d = (1 - t) ** 2 * s11 + t ** 2, (1 - t) ** 2 * s12, (1 - t) ** 2 * s22 + t ** 2
        det = a * d - b * b
        dx = x[:, None, 0] - (1 - t) * mu[:, 0]
        dy = x[:, None, 1] - (1 - t) * mu[:, 1]
        u1, u2 = (d * dx - b * dy) / det, (a * dy - b * dx) / det  # C^-1 (x - (1-t) mu)
        logits = self.log_weight[ks] - 0.5 * (dx * u1 + dy * u2) - 0.5 * det.log() - math.log(2 * math.pi)
        everything = labels[:, None] < 0
        logits = torch.where(everything, logits + self.class_log_prior[label], logits)
        logits = logits.masked_fill(~((label[None, :] == labels[:, None]) | everything), -math.inf)
        return logits, (t, mu, s11, s12, s22, u1, u2), ks


    def log_density(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        """Exact log p_t(x | class) [N] (float64); labels -1 or None give the mixture of all classes."""
        x, t, labels = self._broadcast(x, t, labels)
        out = []
        for i in range(0, x.shape[0], CHUNK):
            logits, _, _ = self._marginal_logits(x[i:i + CHUNK], t[i:i + CHUNK], labels[i:i + CHUNK])
            out.append(logits.logsumexp(1))
        return torch.cat(out)

    def velocity(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        """Exact ideal velocity E[eps - x0 | x_t = x, class] [N,2] (float64)."""
        x, t, labels = self._broadcast(x, t, labels)
        out = []
        for i in range(0, x.shape[0], CHUNK):
            logits, (tt, mu, s11, s12, s22, u1, u2), _ = self._marginal_logits(
                x[i:i + CHUNK], t[i:i + CHUNK], labels[i:i + CHUNK])
            post = logits.softmax(1)
            # Per component: -mu + (t I - (1-t) S) C^-1 (x - (1-t) mu), then averaged under the posterior.
            vx = -mu[:, 0] + (tt - (1 - tt) * s11) * u1 - (1 - tt) * s12 * u2
            vy = -mu[:, 1] - (1 - tt) * s12 * u1 + (tt - (1 - tt) * s22) * u2
            out.append(torch.stack(((post * vx).sum(1), (post * vy).sum(1)), 1))
        return torch.cat(out)

    def denoiser(self, x: Tensor, sigma: Tensor | float, labels: Tensor | None = None) -> Tensor:
        """Exact E[x0 | x0 + sigma n = x, class] [N,2] (float64), in EDM's parameterisation.

        The same point on the flow path is x_t = x / (1 + sigma) at t = sigma / (1 + sigma), where
        x_t - t v(x_t) = E[x0 | x_t]; so this reuses the velocity's Gaussian algebra."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0])
        if bool((sigma < 0).any()) or not bool(torch.isfinite(sigma).all()):
            raise ValueError("sigma must be finite and >= 0, one value or one per point")
        t = sigma / (1 + sigma)
        xt = x.to(torch.float64) / (1 + sigma[:, None])
        return xt - t[:, None] * self.velocity(xt, t, labels)

    def data_fit(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For data points (t = 0): log p(x | class), the class's most responsible component, and the
        squared Mahalanobis distance to it; one pass over the components."""
        x, t, labels = self._broadcast(x, 0.0, labels)
        logp, comps, dists = [], [], []
        for i in range(0, x.shape[0], CHUNK):
            logits, (_, mu, _, _, _, u1, u2), ks = self._marginal_logits(
                x[i:i + CHUNK], t[i:i + CHUNK], labels[i:i + CHUNK])
            k = logits.argmax(1, keepdim=True)
            diff = x[i:i + CHUNK] - mu[k[:, 0]]
            logp.append(logits.logsumexp(1))
            comps.append(ks[k[:, 0]])
            dists.append(diff[:, 0] * u1.gather(1, k)[:, 0] + diff[:, 1] * u2.gather(1, k)[:, 0])
        return torch.cat(logp), torch.cat(comps), torch.cat(dists)

    def _check_labels(self, labels: Tensor, lowest: int) -> None:
        if labels.dim() != 1 or labels.is_floating_point():
            raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {list(labels.shape)}")
        if labels.numel() and (int(labels.min()) < lowest or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [{lowest}, {self.num_classes}) (-1: all classes), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")

    def _broadcast(self, x: Tensor, t, labels):
        if x.dim() != 2 or x.shape[1] != 2:
            raise ValueError(f"x must be points of shape [N, 2], got {list(x.shape)}")
        n = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float64)
        t = t.expand(n) if t.dim() == 0 else t.to(torch.float64)
        if t.shape != (n,) or bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"t must be a noise level in [0, 1], or one per point (shape [{n}])")
        labels = torch.full((n,), -1, dtype=torch.long) if labels is None else labels
        if labels.shape != (n,):
            raise ValueError(f"labels must have one entry per point (shape [{n}]), got {list(labels.shape)}")
        self._check_labels(labels, lowest=-1)
        return x.to(torch.float64), t, labels.to(torch.long)


class LeavesMixture(ClassMixture):
    """The leaves toy: equally likely classes, centred, with unit variance per coordinate on average."""

    def __init__(self, config: LeavesConfig):
        mu, cov, weight, label = _grow_leaves(config)
        mu, cov = torch.tensor(mu, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64)
        log_weight = torch.tensor(weight, dtype=torch.float64).log()
        # Centre the data and give it unit variance per coordinate on average, like the noise.
        p = log_weight.exp()[:, None] / config.classes
        mean = (p * mu).sum(0)
        var = (p * ((mu - mean) ** 2 + cov.diagonal(dim1=1, dim2=2))).sum() / 2
        super().__init__(config, (mu - mean) / var.sqrt(), cov / var, log_weight, torch.tensor(label),
                         torch.full((config.classes,), -math.log(config.classes), dtype=torch.float64))


def _grow_leaves(config: LeavesConfig):
    """Means, covariances, within-class weights and labels of every component, from a fixed seed.

    Class c's root leaves a point near the origin at angle 2 pi c / classes; each child turns by a jittered
    angle that narrows with depth, and is 0.7 times as long and 0.75 times as thick as its parent.
    """
    if config.classes < 1 or config.depth < 0 or config.per_branch < 1:
        raise ValueError(f"LeavesConfig needs classes >= 1, depth >= 0, per_branch >= 1; got {config}")
    rnd = torch.Generator().manual_seed(config.seed)

    def jitter(spread: float) -> float:
        return 1 + spread * float(torch.randn((), generator=rnd))

    mu, cov, weight, label = [], [], [], []

    def branch(cls: int, level: int, start, angle: float, length: float, thick: float):
        direction = (math.cos(angle), math.sin(angle))
        along = length / config.per_branch * 0.6
        # Each level holds 1/(depth+1) of the class; its 2**level branches share that equally.
        w = 1 / ((config.depth + 1) * 2 ** level * config.per_branch)
        for j in range(config.per_branch):
            f = (j + 0.5) / config.per_branch * length
            mu.append((start[0] + direction[0] * f, start[1] + direction[1] * f))
            ux, uy = direction
            cov.append(((along ** 2 * ux * ux + thick ** 2 * uy * uy, (along ** 2 - thick ** 2) * ux * uy),
                        ((along ** 2 - thick ** 2) * ux * uy, along ** 2 * uy * uy + thick ** 2 * ux * ux)))
            weight.append(w)
            label.append(cls)
        if level == config.depth:
            return
        end = (start[0] + direction[0] * length, start[1] + direction[1] * length)
        for sign in (1, -1):
            turn = sign * 0.6 * 0.8 ** level * jitter(0.2)
            branch(cls, level + 1, end, angle + turn, length * 0.7 * jitter(0.1), thick * 0.75)

    # Roots fan out from the origin; few classes share a narrow fan, so their trees interleave.
    spacing = min(2 * math.pi / config.classes, 0.8)
    for c in range(config.classes):
        angle = math.pi / 2 + spacing * (c - (config.classes - 1) / 2)
        start = (0.2 * math.cos(angle), 0.2 * math.sin(angle))
        branch(c, 0, start, angle, 1.0 * jitter(0.1), config.thickness)
    return mu, cov, weight, label
