"""Options of the benchmark suite, set by environment variables so `benchmarks.report` and CI pass them through pytest:

- SGG_BENCH_SMOKE=1: tiny sizes and one round (CI, with --benchmark-disable: the suite never rots);
- SGG_BENCH_DEVICE=cpu|cuda: only this device (default: cpu, and cuda when present);
- SGG_BENCH_BUDGET_S=N: skip the benchmarks that would start after N seconds (`make gpu-check`'s budget);
- SGG_BENCH_THREADS=N: torch's CPU threads for the whole run.
"""
import os
import time

import pytest
import torch

_START = time.monotonic()


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
    if os.environ.get("SGG_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["SGG_BENCH_THREADS"]))
    # One compiled chain per op, dtype and rank: more than dynamo's default recompile limit of 8.
    for knob in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)
