"""The demo's figures: samples per method over the true density, and per-t velocity-error curves."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .study import HIGH_NOISE, StudyResult  # noqa: E402

MAX_POINTS = 3000  # points drawn per panel, so dense methods stay readable


def plot_samples(result: StudyResult, title: str, path: Path, resolution: int = 160) -> None:
    """One panel per featured method: samples coloured by class over the exact log-density of the data."""
    toy, labels = result.toy, result.labels
    ref = result.samples["exact"]
    lo, hi = ref.min(0).values - 0.4, ref.max(0).values + 0.4
    xs, ys = (torch.linspace(lo[i], hi[i], resolution) for i in range(2))
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    density = toy.log_density(grid, 0.0).reshape(resolution, resolution)
    density = density.clamp(min=density.max() - 12)  # 12 nats of contrast: the branches, not the void

    n = len(result.samples)
    cols = min(n, 3)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4 * cols, 3.6 * math.ceil(n / cols)),
                             squeeze=False)
    keep = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))[:MAX_POINTS]
    for ax, (label, x) in zip(axes.flat, result.samples.items()):
        ax.imshow(density, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="Greys", aspect="auto")
        ax.scatter(x[keep, 0], x[keep, 1], c=labels[keep], cmap="tab10", vmin=0, vmax=9, s=1.5, alpha=0.7,
                   linewidths=0)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xticks=[], yticks=[], title=label)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_velocity_errors(result: StudyResult, title: str, path: Path) -> None:
    """Left: mean |v - v*|^2 per t. Right: the same relative to no guidance (below 1: guidance helps there)."""
    t = result.t_grid
    base = result.velocity_errors["none"]
    fig, (ax_abs, ax_rel) = plt.subplots(1, 2, figsize=(11, 4))
    for label, err in result.velocity_errors.items():
        ax_abs.plot(t, err, marker=".", label=label)
        ax_rel.plot(t, err / base, marker=".", label=label)
    ax_abs.set(yscale="log", xlabel="t (1 = noise)", ylabel="mean |v - v*|^2", title="velocity error")
    ax_rel.set(yscale="log", xlabel="t (1 = noise)", ylabel="error / error without guidance",
               title="relative to no guidance")
    for ax in (ax_abs, ax_rel):
        ax.axvline(HIGH_NOISE, color="grey", lw=0.5, ls=":")
        ax.invert_xaxis()  # sampling runs from noise (left) to data (right)
    ax_rel.axhline(1.0, color="black", lw=0.7)
    ax_abs.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
