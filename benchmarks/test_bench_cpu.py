"""pytest-benchmark suite for the CPU guided step: fused op vs eager chain vs torch.compile chain.

    .venv/bin/python -m pytest benchmarks/test_bench_cpu.py --benchmark-columns=median,iqr,rounds
"""
import pytest
import torch

import sgg_kernels  # noqa: F401
from benchmarks.cases import cpu_sizes, make_inputs, providers

PROVIDERS = providers()


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("size", list(cpu_sizes(torch.float32)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_guided_step(benchmark, provider, size, dtype):
    inp = make_inputs(cpu_sizes(dtype)[size], dtype)
    fn = PROVIDERS[provider]
    benchmark.group = f"{size} {dtype}"
    benchmark.extra_info["GB/s per call"] = inp.bytes_moved / 1e9
    benchmark.pedantic(fn, args=(inp,), warmup_rounds=2, rounds=10)
