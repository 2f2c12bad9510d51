"""What one call of guided_step / guided_step_ costs on a [1, 16] float32 tensor, where the arithmetic is
nothing: the dispatcher, the checks and the autograd kernels. Each case runs in a fresh process, one
torch thread, best of 7 x 5000 calls, under torch.enable_grad(), torch.no_grad() and inside
torch.inference_mode(); "package" imports sgg_kernels (the Python autograd kernels), "library only"
loads the libraries alone (the library's own autograd kernels, csrc/library_only_autograd.cpp).

    python benchmarks/call_overhead.py
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import sgg_kernels

CASE = textwrap.dedent("""
    import sys, timeit, torch
    torch.set_num_threads(1)
    mode, paths = sys.argv[1], sys.argv[2:]
    if mode == "package":
        import sgg_kernels
    else:
        for path in paths:
            torch.ops.load_library(path)
    x, c, u, w = (torch.randn(1, 16) for _ in range(4))
    weights, step = torch.tensor([3.5, 2.0]), torch.tensor([1.0, -0.25])
    calls = {"guided_step_": lambda: torch.ops.sgg.guided_step_(x, c, u, w, weights, step),
             "guided_step": lambda: torch.ops.sgg.guided_step(x, c, u, w, weights, step)}
    for context in ("enable_grad", "no_grad", "inference_mode"):
        with getattr(torch, context)():
            for name, call in calls.items():
                best = min(timeit.repeat(call, number=5000, repeat=7)) / 5000
                print(f"| {mode} | `{name}` | `torch.{context}()` | {best * 1e6:.1f} us |")
""")


def main() -> None:
    print("| process | op | context | per call |\n|---|---|---|---|")
    for mode in ("package", "library only"):
        out = subprocess.run([sys.executable, "-c", CASE, mode, *sgg_kernels.library_paths()],
                             capture_output=True, text=True, timeout=600, check=True).stdout
        print(out, end="")


if __name__ == "__main__":
    main()
