"""python -m sgg_kernels.demo: the paper's synthetic weak-to-strong study on CPU.

    python -m sgg_kernels.demo                                   # all three regimes, small sweep, out/demo
    python -m sgg_kernels.demo --regime edm2-tree --sweep full --out /tmp/study --retrain
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from .metrics import REACHED_MAHALANOBIS2
from .study import HIGH_NOISE, REGIMES, SWEEPS, EDM2Regime, StudyResult, run_regime

MISSING_MATPLOTLIB = ("python -m sgg_kernels.demo draws its figures with matplotlib, which is not installed: "
                      "install the demo extra, pip install 'sgg_kernels[demo]' (or pip install matplotlib)")
METRICS = (("sw", -1), ("logp", 1), ("cover", 1), ("off", -1))  # (metric, +1 if higher is better)
CALIBRATION = ("none", "ag w=3.0", "cfg s=4.0")  # EDM2's unguided, AutoGuidance w=3 and CFG w=4 runs

COLUMNS = ("regime", "method", "settings", "NFE", "SW", "SW/cls", "logp", "cover", "off%", "verr>", "verr<=")


def table_rows(regime: str, result: StudyResult) -> list[tuple]:
    """One tuple per row: overall metrics, the mean per-class SW, and the velocity errors."""
    out = []
    for r in result.rows:
        per_class = [v["sw"] for k, v in r.quality.items() if k != "all"]
        q = r.quality["all"]
        out.append((regime, r.method, r.settings, f"{r.nfe:g}", f"{q['sw']:.3f}",
                    f"{sum(per_class) / len(per_class):.3f}", f"{q['logp']:.2f}", f"{q['cover']:.3f}",
                    f"{100 * q['off']:.1f}", f"{r.verr_hi:.3f}", f"{r.verr_lo:.3f}"))
    return out


def removable_summary(result: StudyResult) -> str:
    """Mean share of the conditional model's error that the best lam >= 0 per t removes, and where it peaks."""
    high = result.t_grid > HIGH_NOISE
    parts = [f"{kind.upper()} {100 * float(g[high].mean()):.0f}% / {100 * float(g[~high].mean()):.0f}% "
             f"(most: {100 * float(g.max()):.0f}% at t={float(result.t_grid[g.argmax()]):.3f})"
             for kind, g in result.velocity.removable.items()]
    return f"Error removable by the best lam per t (t > {HIGH_NOISE} / t <= {HIGH_NOISE}): " + ", ".join(parts)


def beats(a: dict, b: dict) -> bool:
    """a is at least as good as b on every metric of METRICS and better on one."""
    signs = [sign * (a[k] - b[k]) for k, sign in METRICS]
    return all(d >= 0 for d in signs) and any(d > 0 for d in signs)


def sgg_answer(name: str, result: StudyResult) -> str:
    """Does SGG (CFG s above tau, AG w below) beat both CFG at s and AG at w on all four metrics, for some tau?"""
    quality = {r.label: r.quality["all"] for r in result.rows}
    sgg = [r for r in result.rows if r.method == "sgg"]
    winners = []
    for r in sgg:
        s, w, _ = (part.split("=")[1] for part in r.settings.split())
        if beats(quality[r.label], quality[f"cfg s={s}"]) and beats(quality[r.label], quality[f"ag w={w}"]):
            winners.append(r.settings)
    best = {}
    for r in result.rows[1:]:
        if r.method not in best or r.quality["all"]["sw"] < best[r.method].quality["all"]["sw"]:
            best[r.method] = r
    verdict = f"yes, at {len(winners)} of {len(sgg)} settings: " + "; ".join(winners) if winners else \
        f"no, at none of the {len(sgg)} settings"
    return (f"{name}: does SGG beat both CFG at its s and AG at its w on SW, logp, cover and off% at once? {verdict}. "
            "Best SW per method: " + ", ".join(f"{m} {r.quality['all']['sw']:.3f} ({r.settings or 'unguided'})"
                                               for m, r in best.items()))


def calibration_summary(result: StudyResult) -> str:
    """EDM2's known effect on its toy: AG lowers off% and raises logp at about the unguided cover; CFG lowers
    cover. Cover is also given per branch level (0: the trunk; levels 5 and 6 hold 3/4 of the components), and
    logp's median beside its mean, which a few far-off samples can drag down alone."""
    toy, rows = result.toy, {r.label: r for r in result.rows}
    ks = torch.cat([toy.components_of(c) for c in result.labels.unique().tolist()])
    lines = []
    for label, name in zip(("exact",) + CALIBRATION, ("exact", "unguided", "AG w=3", "CFG w=4")):
        logp, comp, maha2 = toy.data_fit(result.samples[label], result.labels)
        reached = comp[maha2 <= REACHED_MAHALANOBIS2].unique()
        levels = [float(torch.isin(ks[toy.depth[ks] == d], reached).double().mean())
                  for d in range(int(toy.depth.max()) + 1)]
        v = (rows[label] if label != "exact" else result.rows[0]).quality["all"]
        lines.append(f"  {name:8s} off% {100 * v['off']:4.1f}  logp {v['logp']:6.2f} "
                     f"(median {float(logp.median()):5.2f})  "
                     f"cover {v['cover']:.3f}  "
                     f"SW {v['sw']:.3f}  cover by level 0-{len(levels) - 1}: " + " ".join(f"{c:.2f}" for c in levels))
    return "Calibration against EDM2's toy (class A):\n" + "\n".join(lines)


def per_class_rows(regime: str, result: StudyResult) -> list[tuple]:
    """One tuple per (row, class): the sample metrics of that class."""
    return [(regime, r.method, r.settings, group, f"{q['sw']:.3f}", f"{q['logp']:.2f}", f"{q['cover']:.3f}",
             f"{100 * q['off']:.1f}") for r in result.rows for group, q in r.quality.items() if group != "all"]


def print_table(rows: list[tuple], columns: tuple = COLUMNS) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *rows)]
    for row in (columns, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def write_csv(path: Path, regime: str, result: StudyResult) -> None:
    """Every metric, per class and overall, one line per (method, group)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(("regime", "method", "settings", "nfe", "group", "sw", "logp", "cover", "off",
                        "verr_hi", "verr_lo"))
        for r in result.rows:
            for group, q in r.quality.items():
                w.writerow((regime, r.method, r.settings, r.nfe, group, q["sw"], q["logp"], q["cover"], q["off"],
                            r.verr_hi, r.verr_lo))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sgg_kernels.demo", description=__doc__.splitlines()[0])
    p.add_argument("--regime", choices=(*REGIMES, "all"), default="all")
    p.add_argument("--sweep", choices=tuple(SWEEPS), default="small")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="directory for the PNGs and results.csv")
    p.add_argument("--steps", type=int, default=32, help="sampler steps (Euler; Heun for edm2-tree)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="train the models again instead of using the cache")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; the demo's tensors are small, and on 2 busy cores one thread trained "
                        "18x faster than two (13 ms vs 236 ms a step)")
    p.add_argument("--per-class", action="store_true", help="also print the sample metrics of every class")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        from .figures import plot_calibration, plot_samples, plot_velocity_errors
    except ModuleNotFoundError as e:  # matplotlib: the [demo] extra
        if (e.name or "").split(".")[0] != "matplotlib":
            raise
        raise SystemExit(MISSING_MATPLOTLIB) from None

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.csv").unlink(missing_ok=True)
    rows, class_rows, notes = [], [], []
    answers = []
    for name in REGIMES if args.regime == "all" else (args.regime,):
        start = time.perf_counter()
        result = run_regime(name, args.sweep, retrain=args.retrain, num_steps=args.steps, seed=args.seed,
                            progress=not args.no_progress)
        title = f"{name}: {REGIMES[name].description}"
        plot_samples(result, title, args.out / f"{name}_samples.png", regime=name)
        plot_velocity_errors(result, title, args.out / f"{name}_velocity_error.png")
        write_csv(args.out / "results.csv", name, result)
        rows += table_rows(name, result)
        class_rows += per_class_rows(name, result)
        note = f"{name}: {REGIMES[name].description} ({time.perf_counter() - start:.0f} s). "
        note += removable_summary(result)
        if isinstance(REGIMES[name], EDM2Regime):
            plot_calibration(result, list(CALIBRATION), args.out / f"{name}_calibration.png")
            note += "\n" + calibration_summary(result)
        notes.append(note)
        answers.append(sgg_answer(name, result))
    print(f"\nSW: sliced Wasserstein to exact samples (overall; mean over classes). logp: mean exact log-density "
          f"(precision). cover: fraction of mixture components reached (recall). off%: samples outside the 99.9% "
          f"ellipse of their most responsible component. verr>, verr<=: mean |v - v*|^2 vs the ideal class "
          f"velocity for t > {HIGH_NOISE} and t <= {HIGH_NOISE} (edm2-tree: the denoiser's |D - D*|^2, at "
          f"t = sigma / (1 + sigma)).\n")
    print_table(rows)
    if args.per_class:
        print()
        print_table(class_rows, ("regime", "method", "settings", "class", "SW", "logp", "cover", "off%"))
    print("\n" + "\n".join(notes))
    print("\n" + "\n".join(answers))
    print(f"\nfigures and results.csv in {args.out}/")


if __name__ == "__main__":
    main()
