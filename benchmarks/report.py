"""Runs the benchmark suite and writes the report: a CSV, the tables in benchmarks/RESULTS.md, a PNG plot.

    make bench                                   # = python -m benchmarks.report (CPU, about 7 min here)
    python -m benchmarks.report --device cuda --budget-s 300 --out-dir build/gpu-check   # `make gpu-check`
    python -m benchmarks.report --save-baseline  # also store the run as benchmarks/baselines/<kind>.json

Every figure comes from one pytest-benchmark run of benchmarks/test_bench_ops.py (and, on CPU,
benchmarks/test_bench_e2e.py), so the ratios compare providers measured side by side.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .cases import FUSED, ONE_EAGER_OP

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
MARKERS = {"cpu": ("<!-- cpu-report:begin -->", "<!-- cpu-report:end -->"),
           "cuda": ("<!-- gpu-report:begin -->", "<!-- gpu-report:end -->")}
CSV_COLUMNS = ("op", "provider", "size", "shape", "dtype", "device", "median_s", "q1_s", "q3_s", "min_s", "max_s",
               "rounds", "calls_per_round", "bytes", "gb_s", "pct_of_copy", "speedup_vs_eager", "speedup_vs_compile",
               "device_name", "torch", "triton", "timestamp")


def machine(threads: int) -> dict:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name} ({props.multi_processor_count} SMs)"
    else:
        gpu = None
    try:
        triton = __import__("triton").__version__
    except ImportError:
        triton = "not installed"
    return dict(cpu=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                    f"{threads} thread{'s' if threads > 1 else ''}", gpu=gpu, torch=torch.__version__, triton=triton,
                timestamp=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def machine_kind(device: str) -> str:
    """The baseline's name: results compare only on the same kind of machine."""
    if device == "cuda":
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    return f"cpu-{platform.machine()}-{os.cpu_count()}cores"


def run_suite(device: str, json_path: Path, budget_s: float | None, threads: int, extra: list) -> int:
    env = dict(os.environ, SGG_BENCH_DEVICE=device, SGG_BENCH_THREADS=str(threads), PYTHONPATH=str(HERE.parent))
    if budget_s is not None:
        env["SGG_BENCH_BUDGET_S"] = str(budget_s)
    files = [str(HERE / "test_bench_ops.py")] + ([str(HERE / "test_bench_e2e.py")] if device == "cpu" else [])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, f"--benchmark-json={json_path}",
           "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name", *extra]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=HERE.parent).returncode


def op_rows(data: dict, info: dict) -> list[dict]:
    rows = []
    for b in data["benchmarks"]:
        p, extra, s = b["params"], b["extra_info"], b["stats"]
        if "op" not in p:
            continue
        per_call = 1.0 / extra["calls_per_round"]
        row = dict(op=p["op"], provider=p["provider"], size=p["size"], shape="x".join(map(str, extra["shape"])),
                   dtype=p["dtype"], device=p["device"], rounds=s["rounds"], calls_per_round=extra["calls_per_round"],
                   bytes=extra["bytes"], device_name=info["gpu"] if p["device"] == "cuda" else info["cpu"],
                   torch=info["torch"], triton=info["triton"], timestamp=info["timestamp"])
        for key in ("median", "q1", "q3", "min", "max"):
            row[f"{key}_s"] = s[key] * per_call
        row["gb_s"] = row["bytes"] / row["median_s"] / 1e9
        rows.append(row)
    by_case = {}
    for r in rows:
        by_case.setdefault((r["op"], r["size"], r["dtype"], r["device"]), {})[r["provider"]] = r
    for r in rows:
        case = by_case[(r["op"], r["size"], r["dtype"], r["device"])]
        for col, base in (("pct_of_copy", "copy (same bytes)"), ("speedup_vs_eager", "eager chain"),
                          ("speedup_vs_compile", "torch.compile chain")):
            ratio = case[base]["median_s"] / r["median_s"] if base in case else float("nan")
            r[col] = 100 * ratio if col == "pct_of_copy" else ratio
    return rows


def e2e_rows(data: dict) -> list[dict]:
    rows = [dict(way=b["params"]["way"], wall_s=b["stats"]["median"], nfe=b["extra_info"]["nfe"],
                 model_s=b["extra_info"]["model_s"], threads=b["extra_info"]["threads"], rounds=b["stats"]["rounds"])
            for b in data["benchmarks"] if "way" in b["params"]]
    for r in rows:
        r["other_s"] = r["wall_s"] - r["model_s"]
    return rows


def fmt_time(seconds: float, device: str) -> str:
    return f"{seconds * 1e6:.1f}" if device == "cuda" else f"{seconds * 1e3:.3f}"


def markdown(rows: list[dict], e2e: list[dict], info: dict, device: str, command: str) -> str:
    unit = "us" if device == "cuda" else "ms"
    where = info["gpu"] if device == "cuda" else info["cpu"]
    lines = [f"Measured {info['timestamp']} on {where}; torch {info['torch']}, triton {info['triton']}.",
             f"Command: `{command}`.", ""]
    summary = [r for r in rows if r["provider"] in FUSED]
    if summary:
        lines += ["Summary: the fused op against the baselines, worst and best over the sizes.", "",
                  "| op | dtype | provider | vs eager | vs torch.compile | % of copy bandwidth |", "|---|---|---|---|---|---|"]
        groups = {}
        for r in summary:
            groups.setdefault((r["op"], r["dtype"], r["provider"]), []).append(r)
        for (op, dtype, provider), rs in groups.items():
            span = {c: (min(r[c] for r in rs), max(r[c] for r in rs))
                    for c in ("speedup_vs_eager", "speedup_vs_compile", "pct_of_copy")}
            lines.append(f"| {op} | {dtype} | {provider} | {span['speedup_vs_eager'][0]:.2f}x .. "
                         f"{span['speedup_vs_eager'][1]:.2f}x | {span['speedup_vs_compile'][0]:.2f}x .. "
                         f"{span['speedup_vs_compile'][1]:.2f}x | {span['pct_of_copy'][0]:.0f}% .. "
                         f"{span['pct_of_copy'][1]:.0f}% |")
        lines.append("")
    if e2e:
        ref = next((r for r in e2e if r["way"] == "reference loop"), None)
        lines += ["End-to-end SD3 sampling (benchmarks/e2e_sd3.py): 28 steps, one image, seconds per image.", "",
                  "| way | wall s | NFE | model s | outside the model s (guidance, step, loop, pipeline) | speed-up |", "|---|---:|---:|---:|---:|---:|"]
        for r in e2e:
            gain = f"{ref['wall_s'] / r['wall_s']:.2f}x" if ref else "-"
            lines.append(f"| {r['way']} | {r['wall_s']:.3f} | {r['nfe']} | {r['model_s']:.3f} | {r['other_s']:.4f} | {gain} |")
        lines.append("")
    lines += [f"| op | size | dtype | provider | median {unit} | IQR {unit} | GB/s | % of copy | vs eager | vs compile |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['size']} [{r['shape']}] | {r['dtype']} | {r['provider']} | "
                     f"{fmt_time(r['median_s'], device)} | {fmt_time(r['q3_s'] - r['q1_s'], device)} | "
                     f"{r['gb_s']:.1f} | {r['pct_of_copy']:.0f}% | {r['speedup_vs_eager']:.2f}x | "
                     f"{r['speedup_vs_compile']:.2f}x |")
    return "\n".join(lines) + "\n"


def goal_lines(rows: list[dict]) -> list[str]:
    """Issue 3's GPU goals, each with the worst case over the sizes and dtypes measured."""
    lines = []
    for backend in ("sgg cuda", "sgg triton"):
        mine = [r for r in rows if r["provider"] == backend and r["op"] == "guided_step"]
        if not mine:
            continue
        big = [r["pct_of_copy"] for r in mine if r["size"].endswith(" MB")]
        one_op = {(r["size"], r["dtype"]): r["median_s"] for r in rows
                  if r["provider"] == ONE_EAGER_OP and r["op"] == "guided_step"}
        sd3 = [r["median_s"] / one_op[(r["size"], r["dtype"])] for r in mine
               if r["size"] == "sd3-1024 B=2" and (r["size"], r["dtype"]) in one_op]
        lines.append(f"- {backend}: >= 64 MB: min {min(big, default=float('nan')):.0f}% of copy (goal 90%); "
                     f"sd3-1024 B=2: max {max(sd3, default=float('nan')):.2f}x one eager op's time (goal <= 1); "
                     f"vs torch.compile: min {min(r['speedup_vs_compile'] for r in mine):.2f}x (goal >= 1)")
    pairs = {}
    for r in rows:
        if r["provider"] in ("sgg cuda", "sgg triton"):
            pairs.setdefault((r["op"], r["size"], r["dtype"]), {})[r["provider"]] = r["median_s"]
    ratios = [p["sgg triton"] / p["sgg cuda"] for p in pairs.values() if len(p) == 2]
    if ratios:
        lines.append(f"- triton / cuda time: {min(ratios):.2f} .. {max(ratios):.2f} (goal within 0.90 .. 1.10)")
    return lines


def write_results_md(block: str, device: str, info: dict) -> None:
    begin, end = MARKERS[device]
    text = RESULTS_MD.read_text()
    head, rest = text.split(begin)
    old, tail = rest.split(end)
    if device == "cuda":  # GPU runs accumulate, newest first, each with its date and device
        old = "" if old.strip().startswith("No GPU run") else old
        block = f"### {info['timestamp']}, {info['gpu']}\n\n{block}\n{old.strip()}\n"
    RESULTS_MD.write_text(f"{head}{begin}\n{block}{end}{tail}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    # On the shared 2-core VM, 2 threads made many medians a multiple of ~7.94 ms: an OpenMP region waits
    # for a thread that the scheduler has parked for a time slice. One thread gives medians that compare.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the run (default 1; see above)")
    ap.add_argument("--budget-s", type=float, help="start no benchmark after this many seconds")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results", help="where the CSV and PNG go")
    ap.add_argument("--no-results-md", action="store_true", help="leave benchmarks/RESULTS.md alone")
    ap.add_argument("--save-baseline", action="store_true", help="store the run as benchmarks/baselines/<kind>.json")
    ap.add_argument("--compare", type=float, metavar="PERCENT",
                    help="compare with benchmarks/baselines/<kind>.json; fail if a median is PERCENT slower")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest (after --), e.g. -k guided_step")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks.report --device cuda: no CUDA device here")
        return 2
    kind, info = machine_kind(args.device), machine(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.compare is not None:
        baseline = HERE / "baselines" / f"{kind}.json"
        if not baseline.exists():
            print(f"benchmarks.report --compare: no baseline for this machine kind ({baseline}); make one with "
                  "--save-baseline")
            return 2
        args.pytest_args += [f"--benchmark-compare={baseline}", f"--benchmark-compare-fail=median:{args.compare:g}%"]
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "run.json"
        rc = run_suite(args.device, json_path, args.budget_s, args.threads, args.pytest_args)
        if not json_path.exists():
            return rc or 1
        data = json.loads(json_path.read_text())
        if args.save_baseline:
            (HERE / "baselines").mkdir(exist_ok=True)
            shutil.copy(json_path, HERE / "baselines" / f"{kind}.json")
    rows, e2e = op_rows(data, info), e2e_rows(data)
    csv_path, png_path = args.out_dir / f"{kind}.csv", args.out_dir / f"{kind}.png"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in CSV_COLUMNS} for r in rows)
    try:
        from .plot import plot
    except ImportError as e:  # the GPU machine may lack matplotlib: the tables still come out
        print(f"no plot: {e}")
    else:
        plot(rows, png_path, f"{kind}, {info['timestamp']}")
    command = " ".join(["python -m benchmarks.report", *(argv if argv is not None else sys.argv[1:])])
    block = markdown(rows, e2e, info, args.device, command.strip())
    if args.device == "cuda":
        block += "\n" + "\n".join(goal_lines(rows)) + "\n"
    block += f"\nFiles: `{os.path.relpath(csv_path, HERE)}`, `{os.path.relpath(png_path, HERE)}`.\n"
    (args.out_dir / f"{kind}.md").write_text(block)
    if not args.no_results_md:
        write_results_md(block, args.device, info)
    print(block)
    return rc


if __name__ == "__main__":
    sys.exit(main())
