"""How a call is timed, on CPU and on CUDA: one plan that `python -m sgg_kernels.bench` runs itself
and the repository's pytest-benchmark suite hands to `benchmark.pedantic`.

- CPU: the wall clock around each call, after warm-up; rounds chosen so each provider gets about
  `target_s` seconds (at least MIN_ROUNDS).
- CUDA: `calls` back-to-back calls are captured in one CUDA graph, and each round replays it between
  two CUDA events (the clock below), so host dispatch is excluded; a round's time is divided by
  `calls_per_round` to give the time per call.
"""
from __future__ import annotations

import ctypes
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
# How runs are timed, recorded in each result file; the guard compares only runs of the same method.
# 2 (2026-12-07): every suite interleaves its providers' rounds, the providers of a case share one
# rotation over the input sets, and glibc's malloc keeps freed memory. Result files without the field
# are method 1: the pytest suite timed one provider after another, each rotated through the sets on
# its own, and outputs of 32 MB and more were fresh pages every call.
METHOD = 2
TARGET_SECONDS = 0.4       # timed per provider and case by the full run (the 2-core CPU run has ~200 cases)
MIN_ROUNDS, MAX_ROUNDS = 5, 50
GPU_ROUNDS = 15
TARGET_GRAPH_SECONDS = 2e-3  # calls per graph chosen so one replay takes about this long


def can_keep_freed_memory() -> bool:
    """Whether keep_freed_memory() takes effect in this process: where the C library is glibc."""
    return platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for the next allocation, as jemalloc and tcmalloc do
    (torch's `python -m torch.backends.xeon.run_cpu` preloads one of them for this reason).

    By default glibc serves an allocation above its mmap threshold (at most 32 MB) with fresh pages
    and unmaps them on free, so every out-of-place call at the 64 MB size faulted in its output's
    15,625 pages, whichever provider made it: on the AMD EPYC with one thread, a guided_step call took
    54 ms that way and 13 ms with its memory reused. The 64 MB rows timed the kernel's page faults, and
    their ratios moved by 2x between runs with the allocator's state. Kept, most calls reuse the last
    output's block; glibc 2.36's posix_memalign cannot reuse a freed block that a small allocation
    above it pins, so some rounds still fault (3 of 15 for that guided_step; the medians are clean).
    Returns whether it took effect."""
    if not can_keep_freed_memory():
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


class CudaEventClock:
    """Seconds of device time: records an event on the current stream and waits for it, so the
    interval between two readings is the GPU time of the work between them."""

    def __init__(self):
        self.origin = torch.cuda.Event(enable_timing=True)
        self.origin.record()

    def __call__(self) -> float:
        now = torch.cuda.Event(enable_timing=True)
        now.record()
        now.synchronize()
        return self.origin.elapsed_time(now) / 1e3


@dataclass
class Plan:
    round: Callable[[], object]  # one timed round
    rounds: int
    warmup_rounds: int
    calls_per_round: int
    clock: Callable[[], float]   # seconds


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


def plan(fn, device: str, bytes_moved: int, *, tiny: bool = False, target_s: float = TARGET_SECONDS) -> Plan:
    """How to time fn (one call of one provider); on CPU this calls fn twice to estimate its time.
    tiny: one round after one warm-up call (tests and CI: the code runs, the figure means nothing)."""
    if tiny:
        return Plan(fn, 1, 1, 1, time.perf_counter)
    if device == "cuda":
        calls = max(1, min(200, round(TARGET_GRAPH_SECONDS / (bytes_moved / 3e12))))  # 3 TB/s: a guess
        return Plan(_graph_of(fn, calls).replay, GPU_ROUNDS, 2, calls, CudaEventClock())
    fn()  # the warm-up, then an estimate of one call's time for the number of rounds
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, round(target_s / max(once, 1e-6))))
    return Plan(fn, rounds, 0, 1, time.perf_counter)


def summarize(per_call: list) -> dict:
    """The statistics the report shows, in seconds per call."""
    q1, _, q3 = statistics.quantiles(per_call, n=4, method="inclusive") if len(per_call) > 1 else per_call * 3
    return dict(median_s=statistics.median(per_call), q1_s=q1, q3_s=q3, min_s=min(per_call), max_s=max(per_call),
                rounds=len(per_call))


def interleaved_times(plans: list) -> list[list[float]]:
    """Runs the plans with their rounds interleaved (round 1 of each, then round 2, ...) and returns each
    plan's seconds per call, round by round. A change of load during the run then slows every provider
    alike and their ratios keep. Timed one provider after another, two unchanged default runs on the
    loaded 2-core VM put one op's standing 65% apart (guided_step fp32 against the copy): the load had
    changed between the two timings."""
    for p in plans:
        for _ in range(p.warmup_rounds):
            p.round()
    per_call = [[] for _ in plans]
    for i in range(max(p.rounds for p in plans)):
        for p, times in zip(plans, per_call):
            if i < p.rounds:
                t0 = p.clock()
                p.round()
                times.append((p.clock() - t0) / p.calls_per_round)
    return per_call


class ReplayClock:
    """A clock for pytest-benchmark that replays times measured before: each timed round of a no-op
    reads the clock twice and sees the next recorded duration pass. The pytest suite measures a
    case's providers together (interleaved_times), then reports each provider's rounds in its own test."""

    def __init__(self, durations: list):
        self._durations, self._now, self._started = iter(durations), 0.0, False

    def __call__(self) -> float:
        if self._started:
            self._now += next(self._durations)
        self._started = not self._started
        return self._now
