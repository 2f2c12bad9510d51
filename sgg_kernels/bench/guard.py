"""The regression guard: acts on ratios measured side by side, not on absolute times.

On a shared or different machine, absolute medians drift by tens of percent between runs, and every
provider drifts together. What stays put is each fused op's standing: the time of the same run's
`torch.compile chain` (or same-bytes copy) over the op's time, the providers' rounds interleaved
(timing.interleaved_times). For every fused provider, op and dtype the guard takes the geometric
mean of that standing over the sizes both runs share, in this run and in the baseline, and flags the
group when the op became slower, relative to the yardstick, by more than the threshold widened by the
spread both runs measured: allowed = (1 + threshold) * exp(SPREAD_WEIGHT * spread) - 1, spread the root
mean square over the sizes of the four medians' relative interquartile ranges (op and yardstick, both
runs). The baselines (eager, torch.compile, copy, `sgg torch`) are never flagged; their absolute shift
is reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from . import results
from .cases import FUSED
from .machine import describe, method_of
from .table import COMPILE, COPY, case_key

YARDSTICKS = (COMPILE, COPY)
# Three unchanged default runs on the loaded 2-core Xeon (load 5-7; tests/data/bench_guard/unchanged_*.json),
# compared pairwise and with the stored baseline: the worst group slowed by 41% (spread 0.85) and, with
# rounds 13x their median apart, by 239% (spread 10.2). Both need a weight of at least 0.1 over 30%;
# 0.25 leaves a margin of 2.5 and still flags a 40% slowdown in a group whose spread is below 0.3.
SPREAD_WEIGHT = 0.25


@dataclass
class Movement:
    provider: str
    op: str
    dtype: str
    yardstick: str
    baseline: float  # yardstick time / provider time, geometric mean over the common sizes
    now: float
    sizes: int
    spread: float = 0.0  # RMS over the sizes of the four medians' relative IQRs (see the module docstring)

    @property
    def change(self) -> float:
        """The standing's change: -0.25 when the op became 1/0.75 = 1.33x slower relative to the yardstick."""
        return self.now / self.baseline - 1

    @property
    def slowdown(self) -> float:
        """How much slower the op became relative to the yardstick: 0.4 for 1.4x."""
        return self.baseline / self.now - 1


@dataclass
class Comparison:
    movements: list   # one per fused provider, op, dtype and yardstick present in both runs
    shifts: dict      # provider -> (this run's median / the baseline's, geometric mean; rows compared)
    threshold: float  # fraction of standing a group may lose

    def allowed(self, m: Movement) -> float:
        """The slowdown the group may show before it is flagged: the threshold widened by its spread."""
        return (1 + self.threshold) * math.exp(SPREAD_WEIGHT * m.spread) - 1

    @property
    def regressions(self) -> list:
        return [m for m in self.movements if m.slowdown > self.allowed(m)]


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _medians(rows: list[dict]) -> dict:
    return {(*case_key(r), r["provider"]): r["median_s"] for r in rows}


def _spreads(rows: list[dict]) -> dict:
    """Relative interquartile range of each row's rounds (0 for a single round)."""
    return {(*case_key(r), r["provider"]): (r["q3_s"] - r["q1_s"]) / r["median_s"] for r in rows}


def compare(run_rows: list[dict], base_rows: list[dict], threshold: float) -> Comparison:
    """Compares the standing of each fused provider in run_rows with base_rows (threshold: e.g. 0.3)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: a fraction of standing between 0 and 1, got {threshold}")
    now, base = _medians(run_rows), _medians(base_rows)
    spread_now, spread_base = _spreads(run_rows), _spreads(base_rows)
    common = now.keys() & base.keys()
    standing = {}  # (provider, op, dtype, yardstick) -> [(baseline standing, this run's standing, spread²)]
    for op, size, dtype, device, provider in sorted(common):
        if provider not in FUSED:
            continue
        for yard in YARDSTICKS:
            key = (op, size, dtype, device, yard)
            if key in common:
                ours = (*key[:4], provider)
                squared = sum(s[k] ** 2 for s in (spread_now, spread_base) for k in (key, ours))
                pair = (base[key] / base[ours], now[key] / now[ours], squared)
                standing.setdefault((provider, op, dtype, yard), []).append(pair)
    movements = [Movement(p, op, dtype, yard, _geomean(b for b, _, _ in pairs), _geomean(n for _, n, _ in pairs),
                          len(pairs), math.sqrt(sum(s for _, _, s in pairs) / len(pairs)))
                 for (p, op, dtype, yard), pairs in standing.items()]
    by_provider = {}
    for key in common:
        by_provider.setdefault(key[4], []).append(now[key] / base[key])
    shifts = {p: (_geomean(ratios), len(ratios)) for p, ratios in by_provider.items()}
    return Comparison(movements, shifts, threshold)


def verdict(cmp: Comparison, run_info: dict, base_info: dict, unenforced: str | None = None) -> tuple[str, int]:
    """(text, exit code): 1 when a fused op lost more than the threshold of its standing, unless
    `unenforced` gives the reason the baseline cannot hold this run to it; else 0. The table lists the
    groups that moved by more than half the threshold."""
    pct = f"{cmp.threshold:.0%}"
    lines = [f"Regression guard: this run ({describe(run_info)}, {run_info['timestamp']}) against the baseline "
             f"({describe(base_info)}, {base_info['timestamp']}).",
             f"Flags a fused op that became more than {pct} slower relative to torch.compile or the same-bytes "
             f"copy of its own run (geometric mean over the sizes), a margin widened where the runs' rounds "
             f"spread widely (allowed = (1 + {cmp.threshold:g}) * exp({SPREAD_WEIGHT:g} * spread) - 1)."]
    if not cmp.movements:
        lines.append("Nothing to compare: the two runs share no case with a fused provider and a yardstick.")
        return "\n".join(lines) + "\n", 0
    shared = ", ".join(f"{p} {s:.2f}x" for p, (s, _) in sorted(cmp.shifts.items()))
    lines.append(f"Absolute medians, this run / baseline (geometric mean over the cases both runs have): {shared}. "
                 "A shift the providers share is the machine or its load: reported, not flagged.")
    moved = sorted((m for m in cmp.movements if abs(m.change) > cmp.threshold / 2), key=lambda m: m.change)
    if moved:
        lines += ["", "| provider | op | dtype | standing against | baseline | this run | change | slower by | "
                  "spread | allowed | sizes | |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for m in moved:
            mark = "REGRESSION" if m in cmp.regressions else ("moved" if m.change < 0 else "improved")
            lines.append(f"| {m.provider} | {m.op} | {m.dtype} | {m.yardstick} | {m.baseline:.2f}x | {m.now:.2f}x | "
                         f"{m.change:+.0%} | {max(m.slowdown, 0):.0%} | {m.spread:.2f} | {cmp.allowed(m):.0%} | "
                         f"{m.sizes} | {mark} |")
        lines.append("")
    bad = len(cmp.regressions)
    if not bad:
        lines.append(f"Verdict: no regression ({len(cmp.movements)} groups compared, {len(moved)} moved by more "
                     f"than {cmp.threshold / 2:.0%}).")
        return "\n".join(lines) + "\n", 0
    if unenforced:
        lines.append(f"Verdict: {bad} group(s) slowed by more than allowed, not enforced: {unenforced}.")
        return "\n".join(lines) + "\n", 0
    lines.append(f"Verdict: REGRESSION, {bad} of {len(cmp.movements)} groups slowed by more than allowed "
                 f"({pct} or more).")
    return "\n".join(lines) + "\n", 1


def check(data: dict, threshold: float, baseline: Path | None = None) -> int:
    """Prints the verdict of a result file (results.result()) against `baseline`, or else against the
    stored baseline of its machine kind; returns the exit code. Without a stored baseline for this
    kind it says so and returns 0, after comparing, for information only, with another stored kind."""
    info, unenforced = data["machine"], None
    if baseline is None:
        baseline = results.baseline_for(info["kind"])
        if not baseline.exists():
            others = results.stored_kinds(info["device"])
            print(f"No baseline for this machine kind ({info['kind']}: {describe(info)}); stored: "
                  f"{', '.join(others) or 'none'}. Nothing is flagged (exit 0). To make one, run with --json FILE "
                  f"on an idle machine and pass FILE as --baseline, or store it as {baseline}.")
            if not others:
                return 0
            baseline = results.baseline_for(others[0])
            unenforced = "the baseline is another kind of machine, where the standings differ for real"
            print(f"For information, against {others[0]} (another processor, where the standings may differ "
                  "for real):")
    base = results.load(baseline)
    if not unenforced and method_of(base["machine"]) != method_of(info):
        unenforced = (f"the baseline was timed with method {method_of(base['machine'])} and this run with method "
                      f"{method_of(info)}, whose standings differ (sgg_kernels/bench/timing.py, METHOD); store a "
                      f"baseline of this method with `python -m benchmarks.report --save-baseline`")
        print(f"The baseline {baseline} was timed with another method: compared for information only.")
    text, rc = verdict(compare(data["rows"], base["rows"], threshold), info, base["machine"], unenforced)
    print(text)
    return rc
