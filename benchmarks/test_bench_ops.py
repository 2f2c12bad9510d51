"""Every sgg op x provider x size x dtype, with the baselines users run today measured in the same run.

    PYTHONPATH=$PWD python -m pytest benchmarks/test_bench_ops.py --benchmark-columns=median,iqr,rounds
    python -m benchmarks.report          # runs this suite and writes the CSV, RESULTS.md and the plot

Providers: `sgg cpu` (the C++ kernel through the op), `sgg cuda` / `sgg triton` (the GPU backends,
only with a GPU), `sgg torch` (the pure-PyTorch path), `eager chain` (the diffusers-style chain, or
the eager loss), `torch.compile chain` (its compilation), `copy (same bytes)` (a copy moving as many
bytes as the op must: the bandwidth limit) and, on CUDA, `eager 1 op (c-u)` (one elementwise kernel,
the latency yardstick at small sizes). Each provider's result is checked against the float64
reference before it is timed. The cases and the timing are sgg_kernels.bench's (cases.py, timing.py).
"""
import contextlib
import functools
import time

import pytest
import torch

import sgg_kernels
from sgg_kernels.bench import timing
from sgg_kernels.bench.cases import DTYPES, ONE_EAGER_OP, OPS, make_case, sizes

from benchmarks.conftest import PRESET, devices

PROVIDERS = ("sgg cpu", "sgg cuda", "sgg triton", "sgg torch", "eager chain", "torch.compile chain",
             "copy (same bytes)", ONE_EAGER_OP)
SIZE_LABELS = list(sizes("cuda" if torch.cuda.is_available() else "cpu", torch.float32, PRESET))


@functools.lru_cache(maxsize=1)  # providers vary fastest: one case's inputs serve all of them
def case_for(op, size, dtype, device):
    shape = sizes(device, DTYPES[dtype], PRESET).get(size)
    return None if shape is None else make_case(op, shape, DTYPES[dtype], device)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("size", SIZE_LABELS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", devices())
def test_op(benchmark, device, op, dtype, size, provider):
    case = case_for(op, size, dtype, device)
    if case is None or provider not in case.providers:
        pytest.skip(f"{provider} at {size} does not run on {device}")
    chosen = case.providers[provider]
    benchmark.group = f"{op} {size} {dtype} {device}"
    with sgg_kernels.use_backend(chosen.backend) if chosen.backend else contextlib.nullcontext():
        case.check(provider)
        plan = timing.plan(chosen.fn, device, case.bytes_moved, tiny=PRESET == "tiny")
        benchmark.extra_info.update(shape=list(case.shape), bytes=case.bytes_moved,
                                    calls_per_round=plan.calls_per_round)
        if plan.clock is not time.perf_counter:
            benchmark._timer = plan.clock  # CUDA events; pytest-benchmark has no public per-test timer
        benchmark.pedantic(plan.round, rounds=plan.rounds, warmup_rounds=plan.warmup_rounds)
