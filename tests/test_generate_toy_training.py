"""Two gloo ranks of `python -m sgg_kernels.generate` with a built-in toy model and an empty model cache:
the model is trained once (one rank trains, the other waits and loads it), and the closing line counts
what every group generated, not rank 0's share."""
import contextlib
import os
import re
from pathlib import Path

import pytest
import torch.distributed as dist
from spawned_workers import free_port, spawn_and_wait

pytestmark = [pytest.mark.multiprocess,
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="needs torch.distributed with gloo")]

WORLD, TIMEOUT_S = 2, 300
SEEDS, BATCH = "0-11", "4"  # 3 batches: group 0 makes 8 samples, group 1 makes 4


def worker(rank, port, tmp):
    """One rank as torchrun starts it; counts its trainings and keeps its printed output."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), XDG_CACHE_HOME=str(Path(tmp) / "cache"))
    from sgg_kernels.demo import models
    from sgg_kernels.generate import main

    train = models.train_velocity_model

    def counted_train(*args, **kwargs):
        with open(Path(tmp) / f"trained-by-rank-{rank}", "a") as f:
            f.write(f"{kwargs.get('desc')}\n")
        return train(*args, **kwargs)
    models.train_velocity_model = counted_train
    with open(Path(tmp) / f"stdout-{rank}", "w") as out, contextlib.redirect_stdout(out):
        main(["--model", "toy-shallow", "--seeds", SEEDS, "--batch-size", BATCH, "--steps", "3", "--threads", "1",
              "--schedule", "sgg:3,2,0.5", "--timeout", str(TIMEOUT_S), "--out", str(Path(tmp) / "out")])


def test_two_ranks_on_an_empty_cache_train_once_and_count_every_group(tmp_path):
    spawn_and_wait(worker, (free_port(), str(tmp_path)), WORLD, 2 * TIMEOUT_S, "2-rank generate on an empty cache")
    trainings = [line for f in sorted(tmp_path.glob("trained-by-rank-*")) for line in f.read_text().splitlines()]
    assert sorted(trainings) == ["train shallow-main", "train shallow-weak"]  # each model once, by one rank
    closing = (tmp_path / "stdout-0").read_text()
    assert re.search(r"12 samples of shape \[2\]; generated 12 of them in this run \(2 group\(s\)\)", closing), closing

    # A rerun that remakes one deleted part (group 1's) counts it, though rank 0 made nothing.
    (tmp_path / "out" / "parts" / "seeds-000000004-000000007.npz").unlink()
    (tmp_path / "out" / "samples.npz").unlink()
    spawn_and_wait(worker, (free_port(), str(tmp_path)), WORLD, 2 * TIMEOUT_S, "2-rank rerun")
    assert "generated 4 of them in this run" in (tmp_path / "stdout-0").read_text()
    assert len([f for f in tmp_path.glob("trained-by-rank-*") for _ in f.read_text().splitlines()]) == 2
