"""Result rows and the report's tables: the same Markdown from `python -m sgg_kernels.bench` and from
the repository's `python -m benchmarks.report`.

A row is one op x provider x size x dtype x device, with its per-call times in seconds (median_s,
q1_s, q3_s, min_s, max_s), rounds, calls_per_round and bytes (compulsory traffic of one call);
add_ratios() adds GB/s and the ratios to the baselines measured in the same run.
"""
from __future__ import annotations

from .cases import FUSED, ONE_EAGER_OP
from .machine import describe, method_of

COPY, EAGER, COMPILE = "copy (same bytes)", "eager chain", "torch.compile chain"


def case_key(row: dict) -> tuple:
    return row["op"], row["size"], row["dtype"], row["device"]


def add_ratios(rows: list[dict]) -> list[dict]:
    """GB/s, % of copy and the speed-ups against eager and torch.compile, from the same run's rows."""
    by_case = {}
    for r in rows:
        by_case.setdefault(case_key(r), {})[r["provider"]] = r
    for r in rows:
        r["gb_s"] = r["bytes"] / r["median_s"] / 1e9
        case = by_case[case_key(r)]
        for col, base in (("pct_of_copy", COPY), ("speedup_vs_eager", EAGER), ("speedup_vs_compile", COMPILE)):
            ratio = case[base]["median_s"] / r["median_s"] if base in case else float("nan")
            r[col] = 100 * ratio if col == "pct_of_copy" else ratio
    return rows


def fmt_time(seconds: float, device: str) -> str:
    return f"{seconds * 1e6:.1f}" if device == "cuda" else f"{seconds * 1e3:.3f}"


def summary_lines(rows: list[dict]) -> list[str]:
    """The fused providers against the baselines, worst and best over the sizes."""
    groups = {}
    for r in rows:
        if r["provider"] in FUSED:
            groups.setdefault((r["op"], r["dtype"], r["provider"]), []).append(r)
    if not groups:
        return []
    lines = ["Summary: the fused op against the baselines, worst and best over the sizes.", "",
             "| op | dtype | provider | vs eager | vs torch.compile | % of copy bandwidth |", "|---|---|---|---|---|---|"]
    for (op, dtype, provider), rs in groups.items():
        lo_hi = {c: (min(r[c] for r in rs), max(r[c] for r in rs))
                 for c in ("speedup_vs_eager", "speedup_vs_compile", "pct_of_copy")}
        eager, compiled, copy = lo_hi["speedup_vs_eager"], lo_hi["speedup_vs_compile"], lo_hi["pct_of_copy"]
        lines.append(f"| {op} | {dtype} | {provider} | {eager[0]:.2f}x .. {eager[1]:.2f}x | "
                     f"{compiled[0]:.2f}x .. {compiled[1]:.2f}x | {copy[0]:.0f}% .. {copy[1]:.0f}% |")
    return lines + [""]


def e2e_lines(e2e: list[dict]) -> list[str]:
    """The end-to-end table: wall time, NFE, and the speed-up next to what the NFE ratio alone would give."""
    ref = next((r for r in e2e if r["way"] == "reference loop"), None)
    if ref is None:
        return []
    lines = ["End-to-end SD3 sampling (sgg_kernels/bench/e2e_sd3.py): 28 steps, one image, seconds per image. "
             "Ideal: the speed-up if time were proportional to the sample-evaluations (NFE); share: the part "
             "of the ideal gain reached, (speed-up - 1) / (ideal - 1).", "",
             "| way | wall s | NFE | model s | outside the model s | speed-up | ideal (NFE ratio) | share of ideal gain |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in e2e:
        gain, ideal = ref["wall_s"] / r["wall_s"], ref["nfe"] / r["nfe"]
        share = f"{(gain - 1) / (ideal - 1):.0%}" if ideal != 1 else "-"
        lines.append(f"| {r['way']} | {r['wall_s']:.3f} | {r['nfe']} | {r['model_s']:.3f} | "
                     f"{r['other_s']:.4f} | {gain:.2f}x | {ideal:.2f}x | {share} |")
    return lines + [""]


def markdown(rows: list[dict], e2e: list[dict], info: dict, command: str) -> str:
    device = info["device"]
    unit = "us" if device == "cuda" else "ms"
    lines = [f"Measured {info['timestamp']} on {describe(info)}; torch {info['torch']}, triton {info['triton']}; "
             f"timing method {method_of(info)}" + (f", malloc: {info['malloc']}." if "malloc" in info else "."),
             f"Command: `{command}`.", "", *summary_lines(rows), *e2e_lines(e2e)]
    if rows:
        lines += [f"| op | size | dtype | provider | median {unit} | IQR {unit} | GB/s | % of copy | vs eager | "
                  "vs compile |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
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
