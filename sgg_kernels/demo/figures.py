"""The demo's figures: samples per method over the exact density, per-t error curves, and, for the EDM2
toy, the calibration figure in EDM2's style (needs matplotlib: the [demo] extra).

Each method appears twice where the two differ: its largest-scale setting (fixed in study.py before any
run) and its best setting by SW overall, chosen here from the run's own table.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .study import HIGH_NOISE, Row, StudyResult  # noqa: E402

MAX_POINTS = 3000  # points drawn per panel, so dense methods stay readable
CLASS_NAMES = {"edm2-tree": ("A", "B")}  # EDM2's names for its classes; others are numbered


def shown_rows(result: StudyResult) -> list[tuple[Row, str]]:
    """(row, why shown) for no guidance, then each method's largest-scale and best-SW settings."""
    guided = [r for r in result.rows if r.method not in ("exact", "none")]
    out = [(r, "") for r in result.rows if r.method == "none"]
    for family in dict.fromkeys(r.method for r in guided):
        rows = [r for r in guided if r.method == family]
        largest = next(r for r in rows if r.featured)
        best = min(rows, key=lambda r: r.quality["all"]["sw"])
        if best is largest:
            out.append((largest, f"largest scale, best SW {best.quality['all']['sw']:.3f}"))
        else:
            out += [(largest, "largest scale"), (best, f"best SW {best.quality['all']['sw']:.3f}")]
    return out


def _density_grid(result: StudyResult, lo, hi, resolution: int, labels=None):
    xs, ys = (torch.linspace(lo[i], hi[i], resolution) for i in range(2))
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    cls = None if labels is None else torch.full((grid.shape[0],), labels)
    return result.toy.log_density(grid, 0.0, cls).reshape(resolution, resolution)


def _class_legend(ax, classes: list[int], names) -> None:
    handles = [Line2D([], [], ls="", marker="o", ms=5, color=plt.cm.tab10(c),
                      label=f"class {names[c] if names else c}") for c in classes]
    ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.8)


def _outside_note(ax, x: torch.Tensor, lo, hi) -> None:
    outside = int(((x[:, 0] < lo[0]) | (x[:, 0] > hi[0]) | (x[:, 1] < lo[1]) | (x[:, 1] > hi[1])).sum())
    if outside:
        ax.text(0.98, 0.02, f"{outside} of {x.shape[0]} samples outside the frame (clipped)", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="darkred")


def plot_samples(result: StudyResult, title: str, path: Path, regime: str = "", resolution: int = 160) -> None:
    """One panel per shown setting: samples coloured by class over the exact log-density of the data."""
    labels = result.labels
    ref = result.samples["exact"]
    lo, hi = (ref.min(0).values - 0.4).tolist(), (ref.max(0).values + 0.4).tolist()
    density = _density_grid(result, lo, hi, resolution)
    density = density.clamp(min=density.max() - 12)  # 12 nats of contrast: the branches, not the void

    panels = [("exact", "exact samples", result.samples["exact"])]
    panels += [(r.label, why, result.samples[r.label]) for r, why in shown_rows(result)]
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.8 * rows), squeeze=False)
    keep = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))[:MAX_POINTS]
    classes = labels.unique().tolist()
    for ax, (label, why, x) in zip(axes.flat, panels):
        ax.imshow(density.numpy(), origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="Greys",
                  aspect="auto")
        ax.scatter(x[keep, 0].numpy(), x[keep, 1].numpy(), c=labels[keep].numpy(), cmap="tab10", vmin=0, vmax=9,
                   s=1.5, alpha=0.7, linewidths=0)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xticks=[], yticks=[])
        ax.set_title(f"{label}\n({why})" if why else label, fontsize=9)
        _outside_note(ax, x, lo, hi)
    _class_legend(axes.flat[0], classes, CLASS_NAMES.get(regime))
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_velocity_errors(result: StudyResult, title: str, path: Path) -> None:
    """Per t: the error of no guidance and of each shown setting, the same relative to no guidance, and the
    share of the conditional model's error that the best lam >= 0 removes along the CDG and the CAG direction."""
    t = result.t_grid.numpy()
    v = result.velocity
    base = v.errors["none"]
    unit = "|D - D*|^2 (denoiser)" if result.error_unit == "denoiser" else "|v - v*|^2"
    fig, (ax_abs, ax_rel, ax_gain) = plt.subplots(1, 3, figsize=(15, 4.2))
    for row, why in shown_rows(result):
        name = f"{row.label} ({why})" if why else row.label
        ax_abs.plot(t, v.errors[row.label].numpy(), marker=".", label=name)
        ax_rel.plot(t, (v.errors[row.label] / base).numpy(), marker=".", label=name)
    for kind, name in (("cdg", "CDG: cond - uncond"), ("cag", "CAG: cond - weak")):
        ax_gain.plot(t, v.removable[kind].numpy(), marker="o", label=name)
    ax_abs.set(yscale="log", ylabel=f"mean {unit}", title="error vs the ideal class prediction")
    ax_rel.set(yscale="log", ylabel="error / error without guidance", title="relative to no guidance")
    ax_gain.set(ylim=(0, 1), ylabel="share of the error removed", title="best lam >= 0 per t, by direction")
    for ax in (ax_abs, ax_rel, ax_gain):
        ax.axvline(HIGH_NOISE, color="grey", lw=0.5, ls=":")
        ax.set_xlabel("t (1 = noise)")
        ax.invert_xaxis()  # sampling runs from noise (left) to data (right)
    ax_rel.axhline(1.0, color="black", lw=0.7)
    ax_abs.legend(fontsize=6)
    ax_gain.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_calibration(result: StudyResult, methods: list[str], path: Path, resolution: int = 300,
                     view=(-0.9, 1.5)) -> None:
    """EDM2's figure 1 layout: exact samples, then `methods` (row labels), as black dots over the data's
    high-density region (grey: all classes; orange: the sampled class), in EDM2's view of the toy."""
    lo, hi = (view[0], view[0]), (view[1], view[1])
    cls = int(result.labels[0])
    panels = [("exact samples", result.samples["exact"])] + [(m, result.samples[m]) for m in methods]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3), squeeze=False)
    xs = torch.linspace(lo[0], hi[0], resolution).numpy()
    # EDM2 shades where log p is within 4.5 nats (2.12^2) of its maximum.
    layers = [(_density_grid(result, lo, hi, resolution), "0.9", "0.7"),
              (_density_grid(result, lo, hi, resolution, cls), (1.0, 0.8, 0.6), (0.8, 0.6, 0.5))]
    rows = {r.label: r for r in result.rows}
    for ax, (name, x) in zip(axes.flat, panels):
        for logp, fill, edge in layers:
            level = float(logp.max()) - 2.12 ** 2
            ax.contourf(xs, xs, logp.numpy(), levels=[level, math.inf], colors=[fill])
            ax.contour(xs, xs, logp.numpy(), levels=[level], colors=[edge], linewidths=0.8)
        ax.plot(x[:, 0].numpy(), x[:, 1].numpy(), ".", color="black", alpha=0.25, ms=1.5, mec="none")
        q = rows[name].quality["all"] if name in rows else None
        ax.set_title(name if q is None else f"{name}\nSW {q['sw']:.3f}  logp {q['logp']:.2f}  "
                     f"cover {q['cover']:.2f}  off {100 * q['off']:.1f}%", fontsize=9)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), aspect="equal", xticks=[], yticks=[])
        _outside_note(ax, x, lo, hi)
    fig.suptitle("EDM2's toy, class A: exact, unguided, AutoGuidance and CFG samples over the data density "
                 "(grey: both classes, orange: class A)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=90)
    plt.close(fig)
