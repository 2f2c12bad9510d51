"""GPU table: the fused guided step on both sgg backends vs eager PyTorch and torch.compile.

    python -m benchmarks.gpu_bench [--out FILE] [--reps 15] [--budget-s 240]     # `make gpu-check` runs it

Same inputs and baselines as the CPU table (benchmarks/cases.py), at DESIGN.md's sizes plus 64 and
256 MB per operand, in bf16 and fp32. For each provider:
- us: device time per call. R calls are captured in one CUDA graph and the graph is replayed between
  CUDA events; the median over --reps replays, divided by R. Host dispatch is excluded, so eager's
  kernel count shows as GPU time and launch gaps, not as Python overhead.
- call us: median of back-to-back eager calls, timed the same way but without a graph (what a Python
  sampling loop sees: host-bound at small sizes).
GB/s counts the compulsory traffic (read x, cond, uncond, weak; write x_next); "% copy" compares it
with a device-to-device copy of one operand measured in the same run. Ratios are speed-ups of the row
over eager and over torch.compile (both in us).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time

import torch

import sgg_kernels  # noqa: F401  (registers torch.ops.sgg)
from sgg_kernels import backends, use_backend
from sgg_kernels.reference import guided_step_reference

from .cases import Inputs, eager_chain, fused, make_inputs, size_for_bytes

TARGET_GRAPH_SECONDS = 2e-3  # calls per graph chosen so one replay takes about this long


def gpu_sizes(dtype: torch.dtype) -> dict:
    sizes = {f"sd3-1024 B={b}": (b, 16, 128, 128) for b in (1, 2, 4)}
    sizes["video 21x90x160"] = (1, 16, 21, 90, 160)
    sizes.update({f"{mb} MB": size_for_bytes(mb, dtype) for mb in (64, 256)})
    return sizes


def median_call_seconds(fn, calls: int, reps: int, graph: bool) -> float:
    """Median seconds per call of `calls` back-to-back calls of fn, captured in a CUDA graph or not."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (compiles Triton kernels) outside any capture
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(calls):
                fn()
        run = g.replay
    else:
        def run():
            for _ in range(calls):
                fn()
    run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    return statistics.median(times)


def providers(inp: Inputs) -> dict:
    """name -> (sgg backend or None, zero-argument callable). All compute the same guided Euler step
    except 'eager 1 op', one elementwise kernel: the latency yardstick."""
    compiled = torch.compile(eager_chain, dynamic=False, fullgraph=True)
    out = {}
    for name in ("cuda", "triton"):
        why = backends._why_unavailable(name)
        if why is None:
            out[f"sgg {name}"] = (name, lambda: fused(inp))
        else:
            print(f"# sgg {name}: unavailable ({why})")
    out["eager chain"] = (None, lambda: eager_chain(inp.x, inp.cond, inp.uncond, inp.weak))
    out["torch.compile chain"] = (None, lambda: compiled(inp.x, inp.cond, inp.uncond, inp.weak))
    out["eager 1 op (c-u)"] = (None, lambda: torch.sub(inp.cond, inp.uncond))
    return out


def check(name: str, got: torch.Tensor, exact: torch.Tensor) -> None:
    err = (got.double() - exact).abs().max().item()
    if not err <= 0.05 * exact.abs().max().item():
        raise AssertionError(f"{name} is wrong by {err:.3g} (max |ref| {exact.abs().max().item():.3g})")


def bench_size(label, shape, dtype, reps) -> list[dict]:
    inp = make_inputs(shape, dtype, device="cuda")
    exact = guided_step_reference(inp.x, inp.cond, inp.uncond, inp.weak, inp.weights, inp.step)
    dst = torch.empty_like(inp.x)
    est = inp.bytes_moved / 3e12  # a guess at the fused time, only to size the graphs
    calls = max(1, min(200, round(TARGET_GRAPH_SECONDS / est)))
    copy_s = median_call_seconds(lambda: dst.copy_(inp.cond), calls, reps, graph=True)
    copy_gbs = 2 * inp.x.numel() * inp.x.element_size() / copy_s / 1e9
    rows = []
    for name, (backend, fn) in providers(inp).items():
        with use_backend(backend) if backend else contextlib.nullcontext():
            if not name.startswith("eager 1"):
                check(name, fn(), exact)
            rows.append(dict(size=label, shape=list(shape), dtype=str(dtype)[6:], provider=name,
                             us=median_call_seconds(fn, calls, reps, graph=True) * 1e6,
                             call_us=median_call_seconds(fn, min(calls, 50), reps, graph=False) * 1e6,
                             copy_gbs=copy_gbs, bytes=inp.bytes_moved * (3 if name.startswith("eager 1") else 5) // 5))
    del inp, exact, dst
    torch.cuda.empty_cache()
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    t = {r["provider"]: r["us"] for r in rows}
    lines = []
    for r in rows:
        gbs = r["bytes"] / (r["us"] * 1e-6) / 1e9
        lines.append(f"| {r['size']} {r['shape']} | {r['dtype']} | {r['provider']} | {r['us']:.1f} | "
                     f"{r['call_us']:.1f} | {gbs:.0f} | {100 * gbs / r['copy_gbs']:.0f}% | "
                     f"{t['eager chain'] / r['us']:.2f}x | {t['torch.compile chain'] / r['us']:.2f}x |")
    return lines


def goal_lines(rows: list[dict]) -> list[str]:
    """The issue's goals, each with the worst case over the sizes and dtypes measured."""
    by_case: dict = {}
    for r in rows:
        by_case.setdefault((r["size"], r["dtype"]), {})[r["provider"]] = r
    lines = []
    for backend in ("sgg cuda", "sgg triton"):
        cases = [(k, c) for k, c in by_case.items() if backend in c]
        if not cases:
            continue
        big = [100 * c[backend]["bytes"] / (c[backend]["us"] * 1e-6) / 1e9 / c[backend]["copy_gbs"]
               for (size, _), c in cases if size.endswith(" MB")]
        sd3 = [c[backend]["us"] / c["eager 1 op (c-u)"]["us"] for (size, _), c in cases if size == "sd3-1024 B=2"]
        vs_compile = [c["torch.compile chain"]["us"] / c[backend]["us"] for _, c in cases]
        lines.append(f"# {backend}: >= 64 MB: min {min(big, default=float('nan')):.0f}% of copy (goal 90%); "
                     f"sd3-1024 B=2: max {max(sd3, default=float('nan')):.2f}x one eager op's time (goal <= 1); "
                     f"vs torch.compile: min {min(vs_compile):.2f}x (goal >= 1)")
    pairs = [c["sgg triton"]["us"] / c["sgg cuda"]["us"] for c in by_case.values()
             if "sgg triton" in c and "sgg cuda" in c]
    if pairs:
        lines.append(f"# triton / cuda time: {min(pairs):.2f} .. {max(pairs):.2f} (goal within 0.90 .. 1.10)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--budget-s", type=float, default=240, help="skip the remaining sizes after this long")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_bench: needs a CUDA device (the CPU table is `make bench`)")
        return 2
    # One compiled chain per size and dtype: more than dynamo's default recompile limit of 8.
    for knob in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)
    triton_version = __import__("triton").__version__ if backends.triton_available() else "not installed"
    props = torch.cuda.get_device_properties(0)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# {when}, {props.name} ({props.multi_processor_count} SMs), "
             f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton_version}, "
             f"python {platform.python_version()}",
             "| size | dtype | provider | us | call us | GB/s | % copy | vs eager | vs compile |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    t0, skipped, all_rows = time.monotonic(), [], []
    for dtype in (torch.bfloat16, torch.float32):
        for label, shape in gpu_sizes(dtype).items():
            if time.monotonic() - t0 > args.budget_s:
                skipped.append(f"{label} {str(dtype)[6:]}")
                continue
            rows = bench_size(label, shape, dtype, args.reps)
            all_rows += rows
            for line in format_rows(rows):
                print(line, flush=True)
                lines.append(line)
    footer = [f"# skipped after the {args.budget_s:.0f} s budget: {', '.join(skipped)}"] if skipped else []
    footer += goal_lines(all_rows)
    print("\n".join(footer))
    lines += footer
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
