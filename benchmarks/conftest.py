"""Options of the benchmark suite, set by environment variables so `benchmarks.report` and CI pass them through pytest:

- SGG_BENCH_SMOKE=1: the tiny size and one round (CI, with --benchmark-disable: the suite never rots);
- SGG_BENCH_DEVICE=cpu|cuda: only this device (default: cpu, and cuda when present);
- SGG_BENCH_BUDGET_S=N: skip the benchmarks that would start after N seconds (`make gpu-check`'s budget);
- SGG_BENCH_THREADS=N: torch's CPU threads for the whole run.

What is timed and how lives in sgg_kernels.bench (shared with `python -m sgg_kernels.bench`).
"""
import os
import time

import pytest
import torch

from sgg_kernels.bench.run import configure

_START = time.monotonic()
PRESET = "tiny" if os.environ.get("SGG_BENCH_SMOKE") == "1" else "full"


def devices() -> list:
    chosen = os.environ.get("SGG_BENCH_DEVICE")
    if chosen:
        return [chosen]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(autouse=True)
def within_budget():
    budget = os.environ.get("SGG_BENCH_BUDGET_S")
    if budget and time.monotonic() - _START > float(budget):
        pytest.skip(f"after the {budget} s budget")


def pytest_configure(config):
    configure(int(os.environ["SGG_BENCH_THREADS"]) if os.environ.get("SGG_BENCH_THREADS") else None)
