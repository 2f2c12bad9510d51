"""Runs the op benchmarks without pytest: every chosen case, each provider checked against the float64
reference and then timed side by side (measure_case), into table rows."""
from __future__ import annotations

import contextlib
import logging
import time

import torch

from sgg_kernels import use_backend

from . import timing
from .cases import DTYPES, ONE_EAGER_OP, OPS, make_case, sizes
from .table import COMPILE

# The default run leaves out the slow pure-PyTorch path and the CUDA latency yardstick (--full has them).
FULL_ONLY = ("sgg torch", ONE_EAGER_OP)


class _NoCudaRuntimeNote(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." warning: torch.utils.cpp_extension
    logs it when inductor imports it to compile the CPU chains on a machine with a CUDA toolkit but no
    GPU, which is no news to a CPU benchmark."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


def configure(threads: int | None) -> None:
    """torch's CPU threads for the run, room for one compiled chain per op, dtype, size and rank
    (more than dynamo's default recompile limit of 8), and a malloc that reuses freed memory
    (timing.keep_freed_memory)."""
    timing.keep_freed_memory()
    if not torch.cuda.is_available():
        logger = logging.getLogger("torch.utils.cpp_extension")
        if not any(isinstance(f, _NoCudaRuntimeNote) for f in logger.filters):
            logger.addFilter(_NoCudaRuntimeNote())
    if threads:
        torch.set_num_threads(threads)
    for knob in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)


def _row(case, size: str, dtype: str, provider: str, stats: dict) -> dict:
    return dict(op=case.op, provider=provider, size=size, shape="x".join(map(str, case.shape)), dtype=dtype,
                device=case.device, bytes=case.bytes_moved, **stats)


def _selected(provider):
    return use_backend(provider.backend) if provider.backend else contextlib.nullcontext()


def _with_backend(provider, round_fn):
    if not provider.backend:
        return round_fn

    def run():
        with use_backend(provider.backend):
            return round_fn()
    return run


def measure_case(case, tiny: bool, leave_out=(), target_s: float = timing.TARGET_SECONDS, log=print) -> dict:
    """{provider: (seconds per call of each round, calls per round)} of one case: each provider but
    leave_out checked against the float64 reference, then all of them timed with their rounds interleaved."""
    plans = {}
    for name, provider in case.providers.items():
        if name in leave_out:
            continue
        with _selected(provider):
            try:
                case.check(name)  # torch.compile compiles here, on the first call
                plans[name] = timing.plan(provider.fn, case.device, case.bytes_moved, tiny=tiny, target_s=target_s)
            except Exception as e:  # e.g. inductor without a C++ compiler: the table says so
                if name != COMPILE:
                    raise
                log(f"  {name} unavailable at {case.op} {list(case.shape)} {case.dtype}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}")
    # Each round runs with its provider's backend selected.
    selected = [timing.Plan(_with_backend(case.providers[n], p.round), p.rounds, p.warmup_rounds, p.calls_per_round,
                            p.clock) for n, p in plans.items()]
    return {name: (times, p.calls_per_round)
            for (name, p), times in zip(plans.items(), timing.interleaved_times(selected))}


def run_ops(device: str, preset: str, ops=OPS, dtypes=tuple(DTYPES), target_s: float = timing.TARGET_SECONDS,
            log=print) -> list[dict]:
    """Rows of every op x dtype x size of the preset x provider (all providers for "full")."""
    rows, leave_out = [], () if preset == "full" else FULL_ONLY
    for op in ops:
        for dtype in dtypes:
            for size, shape in sizes(device, DTYPES[dtype], preset).items():
                t0 = time.perf_counter()
                case = make_case(op, shape, DTYPES[dtype], device)
                for name, (times, calls) in measure_case(case, preset == "tiny", leave_out, target_s, log).items():
                    rows.append(_row(case, size, dtype, name, dict(timing.summarize(times), calls_per_round=calls)))
                log(f"  {op} {size} {dtype}: {time.perf_counter() - t0:.1f} s")
    return rows
