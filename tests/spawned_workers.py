"""Worker processes for the multi-process tests: a free loopback port and a bounded spawn."""
import socket

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_and_wait(worker, args: tuple, nprocs: int, timeout_s: int, what: str) -> None:
    """Runs worker(rank, *args) in nprocs spawned processes; fails the test (and kills every rank left)
    if they have not all finished within timeout_s, or if one raised."""
    context = mp.start_processes(worker, args=args, nprocs=nprocs, join=False, start_method="spawn")
    try:
        for _ in range(timeout_s):
            if context.join(timeout=1):
                return
        pytest.fail(f"{what} did not finish in {timeout_s} s")
    finally:
        for process in context.processes:  # a rank left over after a failure must not outlive the test
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
