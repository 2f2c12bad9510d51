"""The regression guard: acts on ratios measured side by side, not on absolute times.

On a shared or different machine, absolute medians drift by tens of percent between runs, and every
provider drifts together. What stays put is each fused op's standing: the time of the same run's
`torch.compile chain` (or same-bytes copy) over the op's time. For every fused provider, op and dtype
the guard takes the geometric mean of that standing over the sizes both runs share, in this run and
in the baseline, and flags the group when it fell by more than the threshold. The baselines (eager,
torch.compile, copy, `sgg torch`) are never flagged; their absolute shift is reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from . import results
from .cases import FUSED
from .machine import describe
from .table import COMPILE, COPY, case_key

YARDSTICKS = (COMPILE, COPY)


@dataclass
class Movement:
    provider: str
    op: str
    dtype: str
    yardstick: str
    baseline: float  # yardstick time / provider time, geometric mean over the common sizes
    now: float
    sizes: int

    @property
    def change(self) -> float:
        return self.now / self.baseline - 1


@dataclass
class Comparison:
    movements: list   # one per fused provider, op, dtype and yardstick present in both runs
    shifts: dict      # provider -> (this run's median / the baseline's, geometric mean; rows compared)
    threshold: float  # fraction of standing a group may lose

    @property
    def regressions(self) -> list:
        return [m for m in self.movements if m.change < -self.threshold]


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _medians(rows: list[dict]) -> dict:
    return {(*case_key(r), r["provider"]): r["median_s"] for r in rows}


def compare(run_rows: list[dict], base_rows: list[dict], threshold: float) -> Comparison:
    """Compares the standing of each fused provider in run_rows with base_rows (threshold: e.g. 0.3)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: a fraction of standing between 0 and 1, got {threshold}")
    now, base = _medians(run_rows), _medians(base_rows)
    common = now.keys() & base.keys()
    standing = {}  # (provider, op, dtype, yardstick) -> [(baseline standing, this run's standing)]
    for op, size, dtype, device, provider in sorted(common):
        if provider not in FUSED:
            continue
        for yard in YARDSTICKS:
            key = (op, size, dtype, device, yard)
            if key in common:
                pair = (base[key] / base[(*key[:4], provider)], now[key] / now[(*key[:4], provider)])
                standing.setdefault((provider, op, dtype, yard), []).append(pair)
    movements = [Movement(p, op, dtype, yard, _geomean(b for b, _ in pairs), _geomean(n for _, n in pairs), len(pairs))
                 for (p, op, dtype, yard), pairs in standing.items()]
    by_provider = {}
    for key in common:
        by_provider.setdefault(key[4], []).append(now[key] / base[key])
    shifts = {p: (_geomean(ratios), len(ratios)) for p, ratios in by_provider.items()}
    return Comparison(movements, shifts, threshold)


def verdict(cmp: Comparison, run_info: dict, base_info: dict, enforce: bool = True) -> tuple[str, int]:
    """(text, exit code): 1 when a fused op lost more than the threshold of its standing and enforce
    is set, else 0. The table lists the groups that moved by more than half the threshold."""
    pct = f"{cmp.threshold:.0%}"
    lines = [f"Regression guard: this run ({describe(run_info)}, {run_info['timestamp']}) against the baseline "
             f"({describe(base_info)}, {base_info['timestamp']}).",
             f"Flags a fused op whose standing (torch.compile's or the same-bytes copy's time over the op's, "
             f"geometric mean over the sizes) fell by more than {pct}."]
    if not cmp.movements:
        lines.append("Nothing to compare: the two runs share no case with a fused provider and a yardstick.")
        return "\n".join(lines) + "\n", 0
    shared = ", ".join(f"{p} {s:.2f}x" for p, (s, _) in sorted(cmp.shifts.items()))
    lines.append(f"Absolute medians, this run / baseline (geometric mean over the cases both runs have): {shared}. "
                 "A shift the providers share is the machine or its load: reported, not flagged.")
    moved = sorted((m for m in cmp.movements if abs(m.change) > cmp.threshold / 2), key=lambda m: m.change)
    if moved:
        lines += ["", "| provider | op | dtype | standing against | baseline | this run | change | sizes | |",
                  "|---|---|---|---|---:|---:|---:|---:|---|"]
        for m in moved:
            mark = "REGRESSION" if m in cmp.regressions else ("moved" if m.change < 0 else "improved")
            lines.append(f"| {m.provider} | {m.op} | {m.dtype} | {m.yardstick} | {m.baseline:.2f}x | {m.now:.2f}x | "
                         f"{m.change:+.0%} | {m.sizes} | {mark} |")
        lines.append("")
    bad = len(cmp.regressions)
    if not bad:
        lines.append(f"Verdict: no regression ({len(cmp.movements)} groups compared, {len(moved)} moved by more "
                     f"than {cmp.threshold / 2:.0%}).")
        return "\n".join(lines) + "\n", 0
    if not enforce:
        lines.append(f"Verdict: {bad} group(s) fell by more than {pct}, not enforced: the baseline is another "
                     "kind of machine, where the standings differ for real.")
        return "\n".join(lines) + "\n", 0
    lines.append(f"Verdict: REGRESSION, {bad} of {len(cmp.movements)} groups fell by more than {pct}.")
    return "\n".join(lines) + "\n", 1


def check(data: dict, threshold: float, baseline: Path | None = None) -> int:
    """Prints the verdict of a result file (results.result()) against `baseline`, or else against the
    stored baseline of its machine kind; returns the exit code. Without a stored baseline for this
    kind it says so and returns 0, after comparing, for information only, with another stored kind."""
    info, enforce = data["machine"], True
    if baseline is None:
        baseline = results.baseline_for(info["kind"])
        if not baseline.exists():
            others = results.stored_kinds(info["device"])
            print(f"No baseline for this machine kind ({info['kind']}: {describe(info)}); stored: "
                  f"{', '.join(others) or 'none'}. Nothing is flagged (exit 0). To make one, run with --json FILE "
                  f"on an idle machine and pass FILE as --baseline, or store it as {baseline}.")
            if not others:
                return 0
            baseline, enforce = results.baseline_for(others[0]), False
            print(f"For information, against {others[0]} (another processor, where the standings may differ "
                  "for real):")
    base = results.load(baseline)
    text, rc = verdict(compare(data["rows"], base["rows"], threshold), info, base["machine"], enforce)
    print(text)
    return rc
