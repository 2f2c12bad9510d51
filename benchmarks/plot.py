"""The report's plot: GB/s against operand size per provider, and the fused op's speed-up over the baselines."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgg_kernels.bench.cases import FUSED, OPS  # noqa: E402

STYLE = {"fp32": "-", "bf16": "--"}


def operand_mb(row: dict) -> float:
    numel = math.prod(int(n) for n in row["shape"].split("x"))
    return numel * (4 if row["dtype"] == "fp32" else 2) / 1e6


def plot(rows: list[dict], path: Path, title: str) -> None:
    if not rows:
        return
    ops = sorted({r["op"] for r in rows}, key=OPS.index)
    fig, axes = plt.subplots(2, len(ops), figsize=(4.5 * len(ops), 8), squeeze=False)
    for col, op in enumerate(ops):
        mine = [r for r in rows if r["op"] == op]
        bandwidth, speed = axes[0][col], axes[1][col]
        for provider in dict.fromkeys(r["provider"] for r in mine):
            for dtype, style in STYLE.items():
                pts = sorted((operand_mb(r), r) for r in mine if r["provider"] == provider and r["dtype"] == dtype)
                if not pts:
                    continue
                xs = [x for x, _ in pts]
                bandwidth.plot(xs, [r["gb_s"] for _, r in pts], style, marker="o", label=f"{provider} {dtype}")
                if provider in FUSED:
                    for key, base in (("speedup_vs_eager", "eager"), ("speedup_vs_compile", "torch.compile")):
                        speed.plot(xs, [r[key] for _, r in pts], style, marker="o",
                                   label=f"{provider} vs {base} {dtype}")
        bandwidth.set(title=f"{op}: GB/s (compulsory bytes / median)", xscale="log", xlabel="MB per operand",
                      ylabel="GB/s")
        speed.set(title=f"{op}: speed-up of the fused op", xscale="log", yscale="log", xlabel="MB per operand",
                  ylabel="baseline time / fused time")
        speed.axhline(1.0, color="grey", linewidth=0.8)
        for ax in (bandwidth, speed):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
