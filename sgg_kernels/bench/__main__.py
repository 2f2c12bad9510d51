"""Benchmarks the sgg ops on this machine: `python -m sgg_kernels.bench --help`.

    python -m sgg_kernels.bench                  # SD3-1024 and video sizes, fp32 and bf16, every op (about 1 min)
    python -m sgg_kernels.bench --full           # the whole matrix (sizes up to 64 MB per operand, every provider)
    python -m sgg_kernels.bench --compare        # and the regression guard against this machine kind's baseline
    python -m sgg_kernels.bench --json run.json  # the results as JSON (an issue report, a CI artifact, a baseline)
    python -m sgg_kernels.bench --tiny           # tiny sizes, one round: checks that everything runs (seconds)
    python -m sgg_kernels.bench --e2e only       # the end-to-end SD3 sampling comparison (diffusers; about 1 min)

Every provider (`sgg cpu`, and with a GPU `sgg cuda` and `sgg triton`) is checked against the float64
reference, then timed in the same run as the baselines users run today: the eager diffusers-style
chain, its torch.compile, and a copy of the same bytes. Read the ratios: they compare providers
measured side by side. Exit status: 0, or 1 when --compare flags a regression, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import guard, results
from .cases import DTYPES, OPS
from .machine import describe, machine
from .run import configure, run_ops
from .table import add_ratios, goal_lines, markdown

# How much slower than the same run's torch.compile or copy a fused op may become, in percent, before
# the guard widens it by the measured spread (guard.SPREAD_WEIGHT): a 1.4x slowdown is then flagged in
# 7 of 9 comparisons of recorded runs on the loaded 2-core VM, and nothing unchanged is.
DEFAULT_THRESHOLD = 30.0


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m sgg_kernels.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="every size (up to 64 MB per operand) and provider")
    size.add_argument("--tiny", action="store_true", help="one tiny size, one round: a check that it runs")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--op", nargs="+", choices=OPS, default=list(OPS), help="only these ops")
    ap.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES), help="only these dtypes")
    # On a shared 2-core VM, 2 threads made many medians a multiple of ~7.94 ms (an OpenMP region waiting
    # for a thread the scheduler had parked); the stored baselines use 1 thread, so their ratios compare.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the baselines)")
    ap.add_argument("--e2e", nargs="?", const="also", choices=("also", "only"),
                    help="also (or only) the end-to-end SD3 sampling comparison; needs diffusers")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the results to FILE")
    ap.add_argument("--results", type=Path, metavar="FILE", help="read a recorded run (--json) instead of measuring")
    ap.add_argument("--compare", type=float, nargs="?", const=DEFAULT_THRESHOLD, metavar="PERCENT",
                    help="flag a fused op that became more than PERCENT slower, relative to its run's yardsticks, "
                         "than in the baseline "
                         f"(default {DEFAULT_THRESHOLD:g}; widened where the runs' rounds spread widely)")
    ap.add_argument("--baseline", type=Path, metavar="FILE",
                    help="compare with FILE (default: the stored baseline of this machine kind)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here")
    if args.threads < 1:
        ap.error(f"--threads: at least 1, got {args.threads}")
    if args.compare is not None and not 0 < args.compare < 100:
        ap.error(f"--compare: a percentage between 0 and 100, got {args.compare:g}")
    if args.baseline is not None and args.compare is None:
        args.compare = DEFAULT_THRESHOLD
    return args


def log(line: str) -> None:
    print(line, flush=True)


def measured(args, command: str) -> dict:
    configure(args.threads)
    info = machine(args.device, args.threads)
    preset = "full" if args.full else "tiny" if args.tiny else "default"
    print(f"sgg_kernels.bench: {preset} run on {describe(info)}; torch {info['torch']}", flush=True)
    rows = [] if args.e2e == "only" else run_ops(args.device, preset, args.op, args.dtype, log=log)
    e2e = []
    if args.e2e:
        from . import e2e_sd3  # needs diffusers, an extra
        e2e = e2e_sd3.run_all(rounds=1 if args.tiny else 3, log=log)
    return results.result(info, rows, e2e, command)


def main(argv=None) -> int:
    args = parse(argv)
    command = " ".join(["python -m sgg_kernels.bench", *(sys.argv[1:] if argv is None else argv)])
    data = results.load(args.results) if args.results else measured(args, command)
    rows = add_ratios([dict(r) for r in data["rows"]])
    text = markdown(rows, data["e2e"], data["machine"], data["command"])
    if data["machine"]["device"] == "cuda":
        text += "\n" + "\n".join(goal_lines(rows)) + "\n"
    print(text)
    if args.json:
        results.save(data, args.json)
        print(f"Results: {args.json}")
    return guard.check(data, args.compare / 100, args.baseline) if args.compare is not None else 0


if __name__ == "__main__":
    sys.exit(main())
