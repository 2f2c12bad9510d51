"""Runs the op benchmarks without pytest: every chosen case, each provider checked against the float64
reference and then timed by timing.plan() / timing.measure(), into table rows."""
from __future__ import annotations

import contextlib
import time

import torch

from sgg_kernels import use_backend

from . import timing
from .cases import DTYPES, ONE_EAGER_OP, OPS, make_case, sizes
from .table import COMPILE

# The default run leaves out the slow pure-PyTorch path and the CUDA latency yardstick (--full has them).
FULL_ONLY = ("sgg torch", ONE_EAGER_OP)


def configure(threads: int | None) -> None:
    """torch's CPU threads for the run, and room for one compiled chain per op, dtype, size and rank
    (more than dynamo's default recompile limit of 8)."""
    if threads:
        torch.set_num_threads(threads)
    for knob in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)


def _row(case, size: str, dtype: str, provider: str, stats: dict) -> dict:
    return dict(op=case.op, provider=provider, size=size, shape="x".join(map(str, case.shape)), dtype=dtype,
                device=case.device, bytes=case.bytes_moved, **stats)


def run_ops(device: str, preset: str, ops=OPS, dtypes=tuple(DTYPES), target_s: float = timing.TARGET_SECONDS,
            log=print) -> list[dict]:
    """Rows of every op x dtype x size of the preset x provider (all providers for "full")."""
    rows = []
    for op in ops:
        for dtype in dtypes:
            for size, shape in sizes(device, DTYPES[dtype], preset).items():
                t0 = time.perf_counter()
                case = make_case(op, shape, DTYPES[dtype], device)
                for name, provider in case.providers.items():
                    if preset != "full" and name in FULL_ONLY:
                        continue
                    with use_backend(provider.backend) if provider.backend else contextlib.nullcontext():
                        try:
                            case.check(name)  # torch.compile compiles here, on the first call
                            plan = timing.plan(provider.fn, device, case.bytes_moved, tiny=preset == "tiny",
                                               target_s=target_s)
                        except Exception as e:  # e.g. inductor without a C++ compiler: the table says so
                            if name != COMPILE:
                                raise
                            log(f"  {name} unavailable at {op} {size} {dtype}: {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}")
                            continue
                        rows.append(_row(case, size, dtype, name, timing.measure(plan)))
                log(f"  {op} {size} {dtype}: {time.perf_counter() - t0:.1f} s")
    return rows
