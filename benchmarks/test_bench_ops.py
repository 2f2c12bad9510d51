"""Every sgg op x provider x size x dtype, with the baselines users run today measured in the same run.

    PYTHONPATH=$PWD python -m pytest benchmarks/test_bench_ops.py --benchmark-columns=median,iqr,rounds
    python -m benchmarks.report          # runs this suite and writes the CSV, RESULTS.md and the plot

Providers: `sgg cpu` (the C++ kernel through the op), `sgg cuda` / `sgg triton` (the GPU backends,
only with a GPU), `sgg torch` (the pure-PyTorch path), `eager chain` (the diffusers-style chain, or
the eager loss), `torch.compile chain` (its compilation), `copy (same bytes)` (a copy moving as many
bytes as the op must: the bandwidth limit) and, on CUDA, `eager 1 op (c-u)` (one elementwise kernel,
the latency yardstick at small sizes). Each provider's result is checked against the float64
reference before it is timed. The cases and the timing are sgg_kernels.bench's (cases.py, timing.py).

A case's providers are timed together, their rounds interleaved, when the case's first test runs
(run.measure_case, as `python -m sgg_kernels.bench` does); each test then reports its provider's rounds
to pytest-benchmark. Timed one test after another, the ratios moved with the load of the shared VM
between two tests: single fp32 rows crossed 0.9x of torch.compile and back between runs.
"""
import functools

import pytest
import torch

from sgg_kernels.bench import timing
from sgg_kernels.bench.cases import DTYPES, ONE_EAGER_OP, OPS, make_case, sizes
from sgg_kernels.bench.run import measure_case

from benchmarks.conftest import PRESET, devices

PROVIDERS = ("sgg cpu", "sgg cuda", "sgg triton", "sgg torch", "eager chain", "torch.compile chain",
             "copy (same bytes)", ONE_EAGER_OP)
SIZE_LABELS = list(sizes("cuda" if torch.cuda.is_available() else "cpu", torch.float32, PRESET))


@functools.lru_cache(maxsize=1)  # providers vary fastest: one case's measurement serves all of them
def measured(op, size, dtype, device):
    """measure_case() of one case, or None where the size does not run on this device."""
    shape = sizes(device, DTYPES[dtype], PRESET).get(size)
    if shape is None:
        return None
    case = make_case(op, shape, DTYPES[dtype], device)
    return case, measure_case(case, tiny=PRESET == "tiny")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("size", SIZE_LABELS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", devices())
def test_op(benchmark, device, op, dtype, size, provider):
    result = measured(op, size, dtype, device)
    if result is None or provider not in result[1]:
        pytest.skip(f"{provider} at {size} does not run on {device}")
    case, times = result
    per_call, calls = times[provider]
    benchmark.group = f"{op} {size} {dtype} {device}"
    benchmark.extra_info.update(shape=list(case.shape), bytes=case.bytes_moved, calls_per_round=calls)
    benchmark._timer = timing.ReplayClock([t * calls for t in per_call])  # no public per-test timer
    benchmark.pedantic(lambda: None, rounds=len(per_call))
