"""Compiles the Triton kernels the GPU tests need into Triton's cache, in parallel processes, so that
`make gpu-check`'s test and sanitizer steps find them compiled (each new specialization is a fresh
compile of about a second, one at a time in a process):

    python tests/gpu/warm_triton_cache.py [--jobs N]     # scripts/gpu_check.sh's warm-triton step
    python tests/gpu/warm_triton_cache.py --device cpu    # the same calls on CPU tensors (make test)

The calls are the tests' own operands (tests/test_ops.py): every dtype, layout, operand presence, a
sample size above and below one block, per-sample and shared coefficients, and w2s_loss forward and
backward, each on the triton backend. Worker k of N makes calls k, k + N, ...
"""
import argparse
import importlib.util
import itertools
import os
import pathlib
import subprocess
import sys
import time

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # tests/ and tests/gpu/: the test helpers

from helpers import DTYPES, LAYOUTS  # noqa: E402
from test_gpu_backends import to_cuda  # noqa: E402
from test_ops import PRESENCE, operands  # noqa: E402

from sgg_kernels import use_backend  # noqa: E402

# (2, 16, 33, 17): 8976 elements per sample, the flat layout; (3, 5, 7): smaller than a block.
SHAPES = ((2, 16, 33, 17), (3, 5, 7))
TIMEOUT_S = 120  # for all workers together


def guidance_specs():
    return list(itertools.product(DTYPES, LAYOUTS, PRESENCE, SHAPES, (True, False)))


def loss_specs():
    return list(itertools.product(DTYPES, PRESENCE))


def guidance_call(spec, device):
    """(out of guided_step, its operands) for one spec; guide runs too."""
    dtype, layout, (has_u, has_w), shape, per_sample = spec
    x, c, u, w, weights, step = (to_cuda(t, device) for t in operands(shape, dtype, layout, has_u, has_w, per_sample))
    torch.ops.sgg.guide(c, u, w, weights)
    return torch.ops.sgg.guided_step(x, c, u, w, weights, step), (x, c, u, w, weights, step)


def loss_call(spec, device):
    dtype, (has_weak, has_mid) = spec
    g = torch.Generator().manual_seed(0)
    v, u, weak, mid = (torch.randn(2, 3, 37, generator=g).to(dtype).to(device) for _ in range(4))
    v.requires_grad_()
    torch.ops.sgg.w2s_loss(v, u, weak if has_weak else None, mid if has_mid else None,
                           torch.rand(2, 3, device=device)).sum().backward()


def load_sanitize_ops():
    spec = importlib.util.spec_from_file_location("sanitize_ops", HERE / "sanitize_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_share(device, worker, workers):
    """This worker's calls on the triton backend; returns how many it made."""
    specs = [(guidance_call, s) for s in guidance_specs()] + [(loss_call, s) for s in loss_specs()]
    mine = specs[worker::workers]
    with use_backend("triton"):
        for call, spec in mine:
            call(spec, device)
    if worker == 0:  # the sanitizer steps' own calls (their odd sizes are specializations of their own)
        load_sanitize_ops().run_all(device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return len(mine)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel processes (default: all cores)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set for the spawned processes
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.worker is not None:
        run_share(args.device, args.worker, args.jobs)
        return
    workers = [subprocess.Popen([sys.executable, __file__, "--device", args.device, "--jobs", str(args.jobs),
                                 "--worker", str(k)]) for k in range(args.jobs)]
    failed, deadline = 0, time.monotonic() + TIMEOUT_S
    for process in workers:
        try:
            failed += process.wait(timeout=max(0.0, deadline - time.monotonic())) != 0
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            failed += 1
    calls = len(guidance_specs()) + len(loss_specs())
    if failed:
        sys.exit(f"warm_triton_cache: {failed} of {args.jobs} workers failed")
    print(f"warm_triton_cache: {calls} calls of every op on the triton backend ({args.device}, {args.jobs} "
          f"processes) ran; their kernels are in Triton's cache")


if __name__ == "__main__":
    main()
