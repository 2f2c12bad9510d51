"""Serving mixed guidance requests: ``python -m benchmarks.batching_bench``.

A stream of requests with staggered arrivals, each drawn from four settings (CFG 4.5 at 28 steps, the
SD3 paper's SGG at 28, no guidance at 20, AutoGuidance at 50), sampled with a small transformer over
32 tokens whose forward costs grow sublinearly with the batch at small batches. Four ways to serve it,
on one device, against the same wall clock:

- ``one-at-a-time``: ``sample()`` per request, in arrival order;
- ``same-settings``: when the device is free, every waiting request with the oldest one's settings
  runs as one ``sample()`` batch (how serving engines batch guidance today);
- ``union``: continuous batching where every row runs every pass (cond, uncond, weak) at every step;
- ``engine``: ``GuidanceEngine``: continuous batching, each pass on only the rows that need it.

Reports throughput, mean latency (finish - arrival) and sample-evaluations. The evaluations are the
hardware-independent figure: the engine's equal the sum of each request's own plan.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from sgg_kernels import GuidanceSchedule
from sgg_kernels.batch_planner import RequestPosition, apply_update, plan_step
from sgg_kernels.batching import GuidanceEngine, Request
from sgg_kernels.sampler import sample
from sgg_kernels.tables import GuidanceTables, timestep_grid

TOKENS, WIDTH = 32, 64
SETTINGS = {  # name: (schedule, steps)
    "cfg": (GuidanceSchedule.cfg(4.5), 28),
    "sgg": (GuidanceSchedule.sd3_paper(28), 28),
    "none": (GuidanceSchedule(), 20),
    "ag": (GuidanceSchedule.autoguidance(2.0), 50),
}


class TinyDiT(nn.Module):
    """Two transformer blocks over 32 tokens of width 64, conditioned by adding t and a class embedding;
    the weak pass skips the second block (skip-layer guidance)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(WIDTH, 4, 2 * WIDTH, dropout=0.0, batch_first=True)
                                    for _ in range(2))
        self.time = nn.Linear(1, WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)
        self.eval()

    def forward(self, x, t, cond, skip=()):
        h = x + self.time(t[:, None, None].to(x.dtype)) + cond[:, None, :]
        for k, block in enumerate(self.blocks):
            if k not in skip:
                h = block(h)
        return self.out(h)

    def weak(self, x, t, cond):
        return self(x, t, cond, skip=(1,))


def workload(kind: str, count: int, gap_s: float, seed: int = 0) -> list[tuple[float, str, Request]]:
    """(arrival time, setting, request): `kind` is 'mixed' (settings drawn in turn, shuffled) or one setting."""
    rng = random.Random(seed)
    names = [list(SETTINGS)[k % len(SETTINGS)] for k in range(count)] if kind == "mixed" else [kind] * count
    rng.shuffle(names)
    out = []
    for k, name in enumerate(names):
        schedule, steps = SETTINGS[name]
        g = torch.Generator().manual_seed(seed * 1000 + k)
        cond = torch.randn(1, WIDTH, generator=g)
        out.append((k * gap_s, name, Request(cond, schedule, null_cond=torch.zeros(1, WIDTH),
                                             noise=torch.randn(1, TOKENS, WIDTH, generator=g), num_steps=steps,
                                             grid="sd3", name=f"{name}{k}")))
    return out


class UnionPosition(RequestPosition):
    """Every pass at every step: a weight of 0 where the request's step does not use it."""

    @property
    def needs(self):
        return True, True


class UnionEngine(GuidanceEngine):
    position_type = UnionPosition


@dataclass
class Run:
    scheme: str
    seconds: float
    latencies: list
    evaluations: int


def _wait_until(t0: float, moment: float) -> None:
    delay = moment - (time.perf_counter() - t0)
    if delay > 0:
        time.sleep(delay)


def run_alone(model, stream) -> Run:
    t0, latencies, evaluations = time.perf_counter(), [], 0
    for arrival, _, r in stream:
        _wait_until(t0, arrival)
        out = sample(model, r.cond, r.schedule, noise=r.noise, null_cond=r.null_cond, weak_model=model.weak,
                     num_steps=r.num_steps, grid=r.grid)
        latencies.append(time.perf_counter() - t0 - arrival)
        evaluations += out.nfe
    return Run("one-at-a-time", time.perf_counter() - t0, latencies, evaluations)


def run_same_settings(model, stream, max_rows: int) -> Run:
    t0, latencies, evaluations, waiting = time.perf_counter(), [], 0, list(stream)
    while waiting:
        _wait_until(t0, waiting[0][0])
        now = time.perf_counter() - t0
        name = waiting[0][1]
        batch = [w for w in waiting if w[1] == name and w[0] <= now][:max_rows]
        waiting = [w for w in waiting if w not in batch]
        r = batch[0][2]
        cat = lambda field: torch.cat([getattr(b[2], field) for b in batch])  # noqa: E731
        out = sample(model, cat("cond"), r.schedule, noise=cat("noise"), null_cond=cat("null_cond"),
                     weak_model=model.weak, num_steps=r.num_steps, grid=r.grid)
        end = time.perf_counter() - t0
        latencies += [end - b[0] for b in batch]
        evaluations += out.nfe
    return Run("same-settings", time.perf_counter() - t0, latencies, evaluations)


def run_engine(model, stream, max_rows: int, engine_type=GuidanceEngine) -> Run:
    engine = engine_type(model, model.weak, max_rows=max_rows)
    t0, latencies, pending, running = time.perf_counter(), [], list(stream), []
    while pending or running:
        if not running:
            _wait_until(t0, pending[0][0])
        now = time.perf_counter() - t0
        while pending and pending[0][0] <= now:
            arrival, _, r = pending.pop(0)
            running.append((arrival, engine.submit(r)))
        engine.step()
        end = time.perf_counter() - t0
        latencies += [end - arrival for arrival, h in running if h.done]
        running = [(arrival, h) for arrival, h in running if not h.done]
    name = "engine" if engine_type is GuidanceEngine else "union"
    return Run(name, time.perf_counter() - t0, latencies, engine.evaluations)


def measure(kind: str, count: int, gap_s: float, max_rows: int, threads: int) -> list[Run]:
    torch.set_num_threads(threads)
    model = TinyDiT()
    stream = workload(kind, count, gap_s)
    with torch.inference_mode():
        run_engine(model, workload(kind, 2, 0.0), max_rows)  # warm-up: first-call costs out of the timings
        return [run_alone(model, stream), run_same_settings(model, stream, max_rows),
                run_engine(model, stream, max_rows, UnionEngine), run_engine(model, stream, max_rows)]


def table(results: dict[str, list[Run]]) -> str:
    lines = ["| workload | scheme | throughput (req/s) | vs same-settings | mean latency (s) | sample-evaluations |",
             "|---|---|---|---|---|---|"]
    for kind, runs in results.items():
        base = next(r for r in runs if r.scheme == "same-settings")
        for r in runs:
            speed = len(r.latencies) / r.seconds
            lines.append(f"| {kind} | {r.scheme} | {speed:.2f} | {speed / (len(base.latencies) / base.seconds):.2f}x "
                         f"| {statistics.mean(r.latencies):.3f} | {r.evaluations} |")
    return "\n".join(lines)


def combine_cost(rows: int = 8, shape=(16, 64, 64), repeats: int = 30) -> str:
    """The planned combine (one guided_step_ per class of rows, on contiguous views) against one call
    over every row with every operand (what a row-sparse kernel would cost at best), in ms."""
    grid, cpu = timestep_grid(4), torch.device("cpu")
    mixes = [GuidanceSchedule(), GuidanceSchedule.cfg(3.0), GuidanceSchedule.cfg(3.0) + GuidanceSchedule.autoguidance(2.0),
             GuidanceSchedule.autoguidance(2.0)]
    positions = [RequestPosition(GuidanceTables.build(mixes[k % 4], grid, cpu), "euler", 1) for k in range(rows)]
    plan = plan_step(positions, cpu)
    x, c = torch.randn(rows, *shape), torch.randn(rows, *shape)
    u = torch.randn(plan.uncond.stop - plan.uncond.start, *shape)
    w = torch.randn(plan.weak.stop - plan.weak.start, *shape)
    full_u, full_w = torch.randn(rows, *shape), torch.randn(rows, *shape)

    def timed(fn):
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats * 1e3
    planned = timed(lambda: apply_update(plan, x, c, u, w))
    one = timed(lambda: torch.ops.sgg.guided_step_(x, c, full_u, full_w, plan.weights, plan.step))
    return (f"combine of {rows} rows of {list(shape)} fp32 in 4 classes: planned {planned:.3f} ms "
            f"({len(plan.groups)} op calls), one call with every operand {one:.3f} ms")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="time between arrivals")
    parser.add_argument("--max-rows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", default="mixed,cfg,sgg,none,ag")
    parser.add_argument("--combine", action="store_true", help="time only the combine, planned against one call")
    args = parser.parse_args(argv)
    if args.combine:
        torch.set_num_threads(args.threads)
        print(combine_cost())
        return
    results = {kind: measure(kind, args.requests, args.gap_ms / 1000, args.max_rows, args.threads)
               for kind in args.workloads.split(",")}
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} thread(s), {args.requests} requests every {args.gap_ms:g} ms, "
          f"max {args.max_rows} rows")
    print(table(results))


if __name__ == "__main__":
    main()
