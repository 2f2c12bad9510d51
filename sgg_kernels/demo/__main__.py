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
    """Mean share of the conditional model's velocity error that the best lam >= 0 per t removes."""
    high = result.t_grid > HIGH_NOISE
    parts = [f"{kind.upper()} {100 * float(g[high].mean()):.0f}% / {100 * float(g[~high].mean()):.0f}%"
             for kind, g in result.velocity.removable.items()]
    return f"Error removable by the best lam per t (t > {HIGH_NOISE} / t <= {HIGH_NOISE}): " + ", ".join(parts)


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
    p.add_argument("--steps", type=int, default=32, help="Euler steps per sample")
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
        note = f"{name}: {REGIMES[name].description} ({time.perf_counter() - start:.0f} s). " + removable_summary(result)
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
