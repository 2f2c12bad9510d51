"""How the suite times a call, on CPU and on CUDA, through pytest-benchmark.

- CPU: pytest-benchmark's wall clock around each call, after warm-up; rounds chosen so each
  provider gets about TARGET_SECONDS (at least MIN_ROUNDS).
- CUDA: `calls` back-to-back calls are captured in one CUDA graph, and each round replays it between
  two CUDA events (the timer below), so host dispatch is excluded. pytest-benchmark's statistics are
  then per replay; `extra_info["calls_per_round"]` divides them to per call (benchmarks.report does).
"""
from __future__ import annotations

import time

import torch

from .cases import SMOKE

TARGET_SECONDS = 0.4       # timed per provider and case (the 2-core CPU run has ~200 cases)
MIN_ROUNDS, MAX_ROUNDS = 5, 50
GPU_ROUNDS = 15
TARGET_GRAPH_SECONDS = 2e-3  # calls per graph chosen so one replay takes about this long


class CudaEventClock:
    """A pytest-benchmark timer in seconds of device time: records an event on the current stream
    and waits for it, so the interval between two readings is the GPU time of the work between them."""

    def __init__(self):
        self.origin = torch.cuda.Event(enable_timing=True)
        self.origin.record()

    def __call__(self) -> float:
        now = torch.cuda.Event(enable_timing=True)
        now.record()
        now.synchronize()
        return self.origin.elapsed_time(now) / 1e3


def _graph_of(fn, calls: int) -> torch.cuda.CUDAGraph:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (Triton and inductor compile here) outside any capture
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return graph


def run(benchmark, fn, device: str, bytes_moved: int) -> None:
    """Times fn (one call of one provider) with `benchmark` and records what the report needs."""
    benchmark.extra_info.update(bytes=bytes_moved, calls_per_round=1)
    if SMOKE:
        benchmark.pedantic(fn, rounds=1, warmup_rounds=1)
        return
    if device == "cuda":
        calls = max(1, min(200, round(TARGET_GRAPH_SECONDS / (bytes_moved / 3e12))))  # 3 TB/s: a guess
        graph = _graph_of(fn, calls)
        benchmark.extra_info["calls_per_round"] = calls
        benchmark._timer = CudaEventClock()  # pytest-benchmark has no public per-test timer
        benchmark.pedantic(graph.replay, rounds=GPU_ROUNDS, warmup_rounds=2)
        return
    fn()  # warm-up, and an estimate of one call's time for the number of rounds
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, round(TARGET_SECONDS / max(once, 1e-6))))
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)
