"""Prints the CPU table: fused guided_step vs the eager diffusers-style chain and its torch.compile.

    make bench                      # or: python -m benchmarks.cpu_table [--reps 30]

Median wall time per call over `--reps` calls after warm-up, all providers interleaved in one run
(this 2-core machine is shared and noisy: read the ratios, which are measured side by side).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import sgg_kernels  # noqa: F401  (registers torch.ops.sgg)
from sgg_kernels.backends import _C
from sgg_kernels.reference import guided_step_reference

from .cases import copy_bandwidth_fn, cpu_sizes, make_inputs, providers


def median_seconds(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, sgg CPU kernel: {_C.cpu_capability() if _C else 'NOT BUILT'}")
    print("| size | dtype | provider | median ms | GB/s | % of copy BW | fused speed-up |")
    print("|---|---|---|---:|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        for name, shape in cpu_sizes(dtype).items():
            inp = make_inputs(shape, dtype)
            copy, copy_bytes = copy_bandwidth_fn(inp)
            copy_gbs = copy_bytes / median_seconds(copy, args.reps) / 1e9
            exact = guided_step_reference(inp.x, inp.cond, inp.uncond, inp.weak, inp.weights, inp.step)
            times = {}
            for pname, fn in providers().items():
                err = (fn(inp).double() - exact).abs().max().item()  # every provider computes the same step
                assert err <= 0.1 * exact.abs().max().item(), f"{pname} is wrong by {err}"
                times[pname] = median_seconds(lambda: fn(inp), args.reps)
            for pname, t in times.items():
                gbs = inp.bytes_moved / t / 1e9
                print(f"| {name} {list(shape)} | {str(dtype)[6:]} | {pname} | {t * 1e3:.3f} | {gbs:.1f} | "
                      f"{100 * gbs / copy_gbs:.0f}% | {t / times['sgg fused']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
