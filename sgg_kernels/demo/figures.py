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
    lo, hi = (ref.min(0).values - 0.4).tolist(), (ref.max(0).values + 0.4).tolist()
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
        ax.imshow(density.numpy(), origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="Greys",
                  aspect="auto")
        ax.scatter(x[keep, 0].numpy(), x[keep, 1].numpy(), c=labels[keep].numpy(), cmap="tab10", vmin=0, vmax=9,
                   s=1.5, alpha=0.7, linewidths=0)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xticks=[], yticks=[], title=label)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_velocity_errors(result: StudyResult, title: str, path: Path) -> None:
    """Per t: each featured method's error, the same relative to no guidance, and the share of the
    conditional model's error that the best lam >= 0 removes along the CDG and the CAG direction."""
    t = result.t_grid.numpy()
    v = result.velocity
    base = v.errors["none"]
    fig, (ax_abs, ax_rel, ax_gain) = plt.subplots(1, 3, figsize=(15, 4))
    for label, err in v.errors.items():
        ax_abs.plot(t, err.numpy(), marker=".", label=label)
        ax_rel.plot(t, (err / base).numpy(), marker=".", label=label)
    for kind, name in (("cdg", "CDG: v_c - v_uncond"), ("cag", "CAG: v_c - v_weak")):
        ax_gain.plot(t, v.removable[kind].numpy(), marker="o", label=name)
    ax_abs.set(yscale="log", ylabel="mean |v - v*|^2", title="velocity error vs the ideal class velocity")
    ax_rel.set(yscale="log", ylabel="error / error without guidance", title="relative to no guidance")
    ax_gain.set(ylim=(0, 1), ylabel="share of the error removed", title="best lam >= 0 per t, by direction")
    for ax in (ax_abs, ax_rel, ax_gain):
        ax.axvline(HIGH_NOISE, color="grey", lw=0.5, ls=":")
        ax.set_xlabel("t (1 = noise)")
        ax.invert_xaxis()  # sampling runs from noise (left) to data (right)
    ax_rel.axhline(1.0, color="black", lw=0.7)
    ax_abs.legend(fontsize=7)
    ax_gain.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
