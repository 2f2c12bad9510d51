"""Runs the benchmark suite and writes the report: a CSV, the tables in benchmarks/RESULTS.md, a PNG plot.

    make bench                                   # = python -m benchmarks.report (CPU, about 7 min here)
    python -m benchmarks.report --device cuda --budget-s 300 --out-dir build/gpu-check   # `make gpu-check`
    python -m benchmarks.report --save-baseline  # also store the run as sgg_kernels/bench/baselines/<kind>.json
    python -m benchmarks.report --compare 30     # and the regression guard (sgg_kernels.bench.guard)

Every figure comes from one pytest-benchmark run of benchmarks/test_bench_ops.py (and, on CPU,
benchmarks/test_bench_e2e.py), so the ratios compare providers measured side by side. The tables,
the result file and the guard are sgg_kernels.bench's, shared with `python -m sgg_kernels.bench`.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from sgg_kernels.bench import guard, results
from sgg_kernels.bench.machine import describe, machine
from sgg_kernels.bench.table import add_ratios, goal_lines, markdown

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
MARKERS = {"cpu": ("<!-- cpu-report:begin -->", "<!-- cpu-report:end -->"),
           "cuda": ("<!-- gpu-report:begin -->", "<!-- gpu-report:end -->")}
CSV_COLUMNS = ("op", "provider", "size", "shape", "dtype", "device", "median_s", "q1_s", "q3_s", "min_s", "max_s",
               "rounds", "calls_per_round", "bytes", "gb_s", "pct_of_copy", "speedup_vs_eager", "speedup_vs_compile",
               "device_name", "torch", "triton", "timestamp")


def run_suite(device: str, json_path: Path, budget_s: float | None, threads: int, extra: list) -> int:
    env = dict(os.environ, SGG_BENCH_DEVICE=device, SGG_BENCH_THREADS=str(threads), PYTHONPATH=str(HERE.parent))
    if budget_s is not None:
        env["SGG_BENCH_BUDGET_S"] = str(budget_s)
    files = [str(HERE / "test_bench_ops.py")] + ([str(HERE / "test_bench_e2e.py")] if device == "cpu" else [])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, f"--benchmark-json={json_path}",
           "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name", *extra]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=HERE.parent).returncode


def op_rows(data: dict) -> list[dict]:
    """pytest-benchmark's JSON -> sgg_kernels.bench table rows (times per call)."""
    rows = []
    for b in data["benchmarks"]:
        p, extra, s = b["params"] or {}, b["extra_info"], b["stats"]
        if "op" not in p:
            continue
        per_call = 1.0 / extra["calls_per_round"]
        rows.append(dict(op=p["op"], provider=p["provider"], size=p["size"], shape="x".join(map(str, extra["shape"])),
                         dtype=p["dtype"], device=p["device"], rounds=s["rounds"],
                         calls_per_round=extra["calls_per_round"], bytes=extra["bytes"],
                         **{f"{key}_s": s[key] * per_call for key in ("median", "q1", "q3", "min", "max")}))
    return rows


def e2e_rows(data: dict) -> list[dict]:
    return [row for b in data["benchmarks"] for row in b["extra_info"].get("e2e", [])]


def write_results_md(block: str, device: str, info: dict) -> None:
    begin, end = MARKERS[device]
    text = RESULTS_MD.read_text()
    head, rest = text.split(begin)
    old, tail = rest.split(end)
    if device == "cuda":  # GPU runs accumulate, newest first, each with its date and device
        old = "" if old.strip().startswith("No GPU run") else old
        block = f"### {info['timestamp']}, {describe(info)}\n\n{block}\n{old.strip()}\n"
    RESULTS_MD.write_text(f"{head}{begin}\n{block}{end}{tail}")


def write_csv(rows: list[dict], info: dict, path: Path) -> None:
    where = {"device_name": f"{info['model']} ({info['cores']} {info['unit']})"}
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: {**r, **info, **where}[k] for k in CSV_COLUMNS} for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    # On the shared 2-core VM, 2 threads made many medians a multiple of ~7.94 ms: an OpenMP region waits
    # for a thread that the scheduler has parked for a time slice. One thread gives medians that compare.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the run (default 1; see above)")
    ap.add_argument("--budget-s", type=float, help="start no benchmark after this many seconds")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results", help="where the CSV, PNG and JSON go")
    ap.add_argument("--no-results-md", action="store_true", help="leave benchmarks/RESULTS.md alone")
    ap.add_argument("--save-baseline", action="store_true",
                    help="store the run as sgg_kernels/bench/baselines/<kind>.json")
    ap.add_argument("--compare", type=float, metavar="PERCENT",
                    help="the regression guard: fail if a fused op lost more than PERCENT of its standing against "
                         "torch.compile or copy, compared with this machine kind's baseline")
    ap.add_argument("--baseline", type=Path, metavar="FILE", help="compare with FILE instead (a result file)")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest (after --), e.g. -k guided_step")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks.report --device cuda: no CUDA device here")
        return 2
    info = machine(args.device, args.threads)
    kind = info["kind"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "run.json"
        rc = run_suite(args.device, json_path, args.budget_s, args.threads, args.pytest_args)
        if not json_path.exists():
            return rc or 1
        data = json.loads(json_path.read_text())
    command = " ".join(["python -m benchmarks.report", *(argv if argv is not None else sys.argv[1:])]).strip()
    rows, e2e = op_rows(data), e2e_rows(data)
    run = results.result(info, rows, e2e, command)
    results.save(run, args.out_dir / f"{kind}.json")
    if args.save_baseline:
        results.save(run, results.baseline_for(kind))
    rows = add_ratios(rows)
    csv_path, png_path = args.out_dir / f"{kind}.csv", args.out_dir / f"{kind}.png"
    write_csv(rows, info, csv_path)
    try:
        from .plot import plot
    except ImportError as e:  # the GPU machine may lack matplotlib: the tables still come out
        print(f"no plot: {e}")
    else:
        plot(rows, png_path, f"{kind}, {info['timestamp']}")
    block = markdown(rows, e2e, info, command)
    if args.device == "cuda":
        block += "\n" + "\n".join(goal_lines(rows)) + "\n"
    block += f"\nFiles: `{os.path.relpath(csv_path, HERE)}`, `{os.path.relpath(png_path, HERE)}`.\n"
    (args.out_dir / f"{kind}.md").write_text(block)
    if not args.no_results_md:
        write_results_md(block, args.device, info)
    print(block)
    if args.compare is not None:
        return rc or guard.check(run, args.compare / 100, args.baseline)
    return rc


if __name__ == "__main__":
    sys.exit(main())
