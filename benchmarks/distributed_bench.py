"""Multi-process sampling on CPU (gloo, one thread per process): ``python -m benchmarks.distributed_bench``.

1. Seconds per sample of one SGG sample() call: one process against a branch-parallel pair, with an
   MLP whose forward dominates the step (the fused guided step costs microseconds here).
2. Throughput of ``python -m sgg_kernels.generate`` with 1 rank, 2 ranks, and 2 ranks as one
   branch-parallel pair, from the seconds it reports for its generation loop (process start and
   imports excluded).
Prints a markdown table; the README and benchmarks/RESULTS.md quote it with the load it ran under.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sgg_kernels import GuidanceSchedule
from sgg_kernels.sampler import sample

DIM, WIDTH, LAYERS, CLASSES = 768, 768, 4, 10
BATCH, STEPS, TIMEOUT_S = 256, 12, 600
SCHEDULE = "sgg:3,2,0.5"  # two evaluations at every step: cond + uncond above t = 0.5, cond + weak below


class BenchMLP(nn.Module):
    """A class-conditional MLP velocity of ~3 M parameters: 4 layers of 768 and an output layer. One
    call on 128 samples took 9 ms at load 2.4 and 14-24 ms at load 7-8 with one thread on the shared
    2-core machine; the bench uses 256 and prints the time it measures."""

    num_classes, sample_shape = CLASSES, (DIM,)

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(CLASSES + 1, WIDTH)
        self.layers = nn.ModuleList(nn.Linear(DIM if i == 0 else WIDTH, WIDTH) for i in range(LAYERS))
        self.out = nn.Linear(WIDTH, DIM)

    def forward(self, x, t, labels):
        h = x + t[:, None] + self.embed(labels)
        for layer in self.layers:
            h = nn.functional.silu(layer(h))
        return self.out(h)


def bench_models():
    """The model and the weak model (same size, so both ranks of a pair do equal work): module:callable."""
    torch.manual_seed(0)
    return BenchMLP().eval(), BenchMLP().eval()


def sampling_inputs():
    g = torch.Generator().manual_seed(0)
    noise, labels = torch.randn(BATCH, DIM, generator=g), torch.randint(0, CLASSES, (BATCH,), generator=g)
    return noise, labels


def timed_samples(repeats: int, **kwargs) -> tuple[float, float]:
    """Median seconds of one sample() call over `repeats`, after one warm-up call: wall clock, and this
    process's CPU time (on a loaded machine the wall clock also counts waiting for a core)."""
    model, weak = bench_models()
    noise, labels = sampling_inputs()
    schedule = GuidanceSchedule.sgg(3.0, 2.0, 0.5)
    call = dict(noise=noise, null_cond=torch.full((BATCH,), CLASSES), weak_model=weak, num_steps=STEPS, **kwargs)
    wall, cpu = [], []
    for _ in range(repeats + 1):
        if dist.is_initialized():
            dist.barrier()
        start, start_cpu = time.perf_counter(), time.process_time()
        sample(model, labels, schedule, **call)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall[1:]), statistics.median(cpu[1:])


def forward_ms(rows: int, repeats: int = 10) -> float:
    model, _ = bench_models()
    x, t, labels = torch.randn(rows, DIM), torch.rand(rows), torch.zeros(rows, dtype=torch.long)
    with torch.no_grad():
        model(x, t, labels)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x, t, labels)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def concurrent_forward_worker(rank: int, out: str):
    torch.set_num_threads(1)
    Path(f"{out}{rank}").write_text(json.dumps(forward_ms(BATCH, repeats=30)))


def concurrent_forward_ms() -> float:
    """A forward's time while another process runs forwards too: equal to the time alone when the
    machine has two free cores, twice it when the two processes share one core's worth of CPU."""
    with TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ms")
        mp.start_processes(concurrent_forward_worker, args=(out,), nprocs=2, start_method="spawn")
        return max(json.loads(Path(f"{out}{r}").read_text()) for r in range(2))


def pair_worker(rank: int, port: int, repeats: int, out: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        Path(f"{out}{rank}").write_text(json.dumps(timed_samples(repeats, branch_group=dist.group.WORLD)))
    finally:
        dist.barrier()
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pair_seconds(repeats: int) -> tuple[float, float]:
    """Rank 0's wall clock, and the larger of the two ranks' CPU times."""
    with TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "seconds")
        mp.start_processes(pair_worker, args=(free_port(), repeats, out), nprocs=2, start_method="spawn")
        (wall, cpu0), (_, cpu1) = (json.loads(Path(f"{out}{r}").read_text()) for r in range(2))
        return wall, max(cpu0, cpu1)


def generation_seconds(world: int, branch_parallel: int, seeds: int) -> float:
    """The generation loop's seconds as `python -m sgg_kernels.generate` reports them (rank 0)."""
    with TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
               "WORLD_SIZE": str(world), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        argv = [sys.executable, "-m", "sgg_kernels.generate", "--model", "benchmarks.distributed_bench:bench_models",
                "--seeds", f"0-{seeds - 1}", "--batch-size", str(BATCH), "--steps", str(STEPS), "--schedule",
                SCHEDULE, "--threads", "1", "--branch-parallel", str(branch_parallel), "--out", tmp]
        procs = [subprocess.Popen(argv, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True) for r in range(world)]
        logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError(f"generate failed: {logs}")
        return float(re.search(r"in ([0-9.]+) s", logs[0]).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed sample() calls per setting (median)")
    ap.add_argument("--seeds", type=int, default=4 * BATCH, help="samples per generation run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load before: {os.getloadavg()}; model forward {forward_ms(BATCH):.1f} ms on {BATCH} samples, "
          f"{forward_ms(2 * BATCH):.1f} ms on {2 * BATCH} (one thread); {concurrent_forward_ms():.1f} ms on "
          f"{BATCH} while a second process runs the same")
    single = {b: timed_samples(args.repeats, batch_cond_uncond=b) for b in (True, False)}
    pair = pair_seconds(args.repeats)
    print(f"\nOne sample() call: {BATCH} samples, {STEPS} Euler steps of {SCHEDULE}, median of {args.repeats}\n")
    print("| setting | wall s per call | ms per sample | vs 1 process | CPU s per call (busiest process) | vs 1 process |")
    print("|---|---|---|---|---|---|")
    rows = [("1 process, batch_cond_uncond=True", single[True]), ("1 process, batch_cond_uncond=False", single[False]),
            ("branch-parallel pair (2 processes)", pair)]
    (base_wall, base_cpu) = single[True]
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.3f} | {wall / BATCH * 1e3:.2f} | {wall / base_wall:.2f}x | {cpu:.3f} | "
              f"{cpu / base_cpu:.2f}x |")
    print(f"\npython -m sgg_kernels.generate, {args.seeds} seeds in batches of {BATCH}, generation loop only\n")
    print("| ranks | s | samples/s | vs 1 rank |")
    print("|---|---|---|---|")
    base = None
    for name, world, bp in (("1", 1, 1), ("2 (seed-sharded)", 2, 1), ("2 (one branch-parallel pair)", 2, 2)):
        seconds = generation_seconds(world, bp, args.seeds)
        base = base or seconds
        print(f"| {name} | {seconds:.2f} | {args.seeds / seconds:.1f} | {base / seconds:.2f}x |")
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
