"""`python -m sgg_kernels.generate`: bitwise the same output for 1, 2 or 3 ranks, any batch size where the
model allows it, branch-parallel groups, resume after SIGKILL, and bad input refused before any write.

The multi-rank runs start one process per rank with the environment torchrun gives them (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT), which skips torchrun's own agent process on this 2-core machine.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from spawned_workers import free_port

from sgg_kernels.generate import main, parse_seeds

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

TIMEOUT_S = 120
REPO = Path(__file__).resolve().parents[1]
COMMON = ["--steps", "6", "--schedule", "sgg:3,2,0.5", "--threads", "1"]
# Models for the runs, importable by the rank processes as gen_models:<callable> (module written to tmp).
MODELS = '''
import os, time
import torch
from sgg_kernels.demo.models import VelocityMLP


class Elementwise(torch.nn.Module):
    """Elementwise products and sums only: a sample's output bits do not depend on its batch."""
    num_classes, sample_shape = 3, (2,)

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a, self.b = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)

    def forward(self, x, t, labels):
        return 0.5 * self.a[labels] * x + self.b[labels] * (1 - t[:, None]) + 0.3 * x.flip(1) * t[:, None]


def elementwise():
    return Elementwise(0), Elementwise(1)


def elementwise_alone():
    return Elementwise(0)


class Stalling(torch.nn.Module):
    """A VelocityMLP that, with STALL_AFTER_CALLS=n set, hangs at its (n+1)-th call: a run to kill."""
    num_classes, sample_shape = 4, (2,)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.mlp, self.calls = VelocityMLP(4, 32, 3), 0
        self.stall_after = int(os.environ.get("STALL_AFTER_CALLS", "0"))

    def forward(self, x, t, labels):
        self.calls += 1
        if self.stall_after and self.calls > self.stall_after:
            time.sleep(3600)
        return self.mlp(x, t, labels)


def stalling():
    torch.manual_seed(1)
    return Stalling().eval(), VelocityMLP(4, 16, 3).eval()
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "gen_models.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)  # main(--threads 1) set it for this process
    sys.modules.pop("gen_models", None)


def launch(argv, world, models_dir, **env):
    """One `python -m sgg_kernels.generate` process per rank, wired as torchrun would."""
    port = free_port()
    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(models_dir)]), "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world), **env}
    return [subprocess.Popen([sys.executable, "-m", "sgg_kernels.generate", *argv],
                             env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for r in range(world)]


def kill(processes):
    for proc in processes:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT_S)


def finish(processes):
    try:
        logs = [proc.communicate(timeout=TIMEOUT_S)[0] for proc in processes]
    except subprocess.TimeoutExpired:
        kill(processes)
        pytest.fail(f"a generation process did not finish in {TIMEOUT_S} s")
    assert all(proc.returncode == 0 for proc in processes), "\n".join(logs)
    return logs


def run_in_process(argv):
    return np.load(main(argv))


def assert_same(a, b):
    assert a["arr_0"].dtype == np.float32 and np.isfinite(a["arr_0"]).all()
    for key in ("arr_0", "arr_1", "seeds"):
        assert np.array_equal(a[key], b[key]), key


@pytest.mark.multiprocess
def test_three_ranks_and_any_batch_size_give_the_same_samples(models):
    argv = ["--model", "gen_models:elementwise", "--seeds", "3-25", "--solver", "heun", *COMMON]
    one = run_in_process([*argv, "--batch-size", "7", "--out", str(models / "one")])
    single_rows = run_in_process([*argv, "--batch-size", "1", "--out", str(models / "rows")])
    finish(launch([*argv, "--batch-size", "4", "--out", str(models / "three")], 3, models))
    three = np.load(models / "three" / "samples.npz")
    assert_same(one, single_rows)
    assert_same(one, three)
    assert list(one["seeds"]) == list(range(3, 26)) and one["arr_0"].shape == (23, 2)
    assert set(one["arr_1"].tolist()) <= {0, 1, 2}


@pytest.mark.multiprocess
def test_branch_parallel_pair_gives_the_single_process_samples(models):
    # A GEMM model (its bits depend on the batch size): equal at the same batch size, as promised.
    argv = ["--model", "toy-random", "--seeds", "0-10", "--batch-size", "5", *COMMON]
    one = run_in_process([*argv, "--out", str(models / "one")])
    finish(launch([*argv, "--branch-parallel", "2", "--out", str(models / "pair")], 2, models))
    assert_same(one, np.load(models / "pair" / "samples.npz"))


def sde_argv(out, batch, seeds="0-12", path="cosine", solver="euler_maruyama"):
    return ["--model", "gen_models:elementwise", "--solver", solver, "--grid", "sit_sde", "--seeds", seeds,
            *(["--path", path] if path else []), "--batch-size", str(batch), "--out", str(out), *COMMON]


def test_sde_samples_do_not_depend_on_the_batch_or_a_resume(models, capsys):
    """Each seed's step noise comes from its own generator: batches of 5, of 1, and a folder finished
    by a second run (after seeds 0-5 alone, in batches of 2) give the same bits."""
    five = run_in_process(sde_argv(models / "five", 5))
    assert_same(five, run_in_process(sde_argv(models / "single", 1)))
    run_in_process(sde_argv(models / "resumed", 2, seeds="0-5"))
    assert_same(five, run_in_process(sde_argv(models / "resumed", 4)))
    ode = run_in_process(sde_argv(models / "ode", 5, path=None, solver="euler"))
    assert np.abs(five["arr_0"] - ode["arr_0"]).max() > 0.1  # the step noise is there
    with pytest.raises(SystemExit):
        main(sde_argv(models / "five", 5, path="linear"))
    assert "path: 'cosine' there, 'linear' now" in capsys.readouterr().err


@pytest.mark.multiprocess
def test_sde_samples_on_two_ranks_are_the_single_rank_samples(models):
    one = run_in_process(sde_argv(models / "one", 3))
    finish(launch(sde_argv(models / "two", 3), 2, models))
    assert_same(one, np.load(models / "two" / "samples.npz"))


@pytest.mark.multiprocess
def test_run_killed_midway_resumes_to_the_uninterrupted_result(models):
    out = models / "killed"
    argv = ["--model", "gen_models:stalling", "--seeds", "0-39", "--batch-size", "4", *COMMON, "--out", str(out)]
    # Per batch the main model runs cond at 6 steps and uncond at the 3 with t > 0.5: 9 calls. Each of the
    # 2 ranks writes 2 of its 5 batches, then hangs inside its third.
    processes = launch(argv, 2, models, STALL_AFTER_CALLS=str(2 * 9 + 2))
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(list((out / "parts").glob("seeds-*.npz"))) < 4:
            assert time.monotonic() < deadline, "the run did not write 4 batches in time"
            assert all(p.poll() is None for p in processes), "a rank exited before it was killed"
            time.sleep(0.2)
    finally:
        kill(processes)
    written = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("seeds-*.npz")}
    assert len(written) == 4 and not (out / "samples.npz").exists()

    finish(launch(argv, 2, models))  # the same command, now without the stall
    resumed = np.load(out / "samples.npz")
    for name, mtime in written.items():  # the batches done before the kill were skipped, not redone
        assert (out / "parts" / name).stat().st_mtime_ns == mtime
    assert len(list((out / "parts").glob("seeds-*.npz"))) == 10
    assert_same(resumed, run_in_process([*argv[:-1], str(models / "uninterrupted")]))


@pytest.mark.parametrize("seeds,message", [("5-3", "empty range"), ("0-x", "not a seed"), ("", "not a seed"),
                                           ("0-4,3-6", "twice"), ("-2", "not a seed")])
def test_malformed_or_empty_seed_range_is_refused_before_writing(tmp_path, capsys, seeds, message):
    with pytest.raises(SystemExit):
        main(["--model", "toy-random", "--seeds", seeds, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "--seeds" in err and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,message", [
    (["--branch-parallel", "2"], "a world of 3 ranks does not divide into groups of 2"),
    (["--schedule", "sgg:3,2"], "sgg takes 3 number(s), got 2"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--steps", "0"], "--steps must be positive"),
    (["--model", "gen_models:elementwise_alone"], "uses a weak model but --model gen_models:elementwise_alone gives none"),
    (["--model", "gen_models:elementwise", "--schedule", "ag:2", "--classes", "0"], "--classes must be at least 1"),
    (["--path", "cosine"], "--path cosine: only --solver euler_maruyama uses the interpolant"),
])
def test_bad_options_are_refused_before_any_process_group_or_file(models, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc-per-node 3 sets it
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit):
        main(["--model", "toy-random", "--seeds", "0-9", "--out", str(models / "out"), *argv])
    assert message in capsys.readouterr().err
    assert not (models / "out").exists() and not dist.is_initialized()


def test_rerun_with_other_settings_is_refused(models, capsys):
    argv = ["--model", "toy-random", "--seeds", "0-3", "--out", str(models / "out"), *COMMON]
    run_in_process(argv)
    with pytest.raises(SystemExit):
        main([*argv, "--solver", "heun"])
    assert "solver: 'euler' there, 'heun' now" in capsys.readouterr().err


def test_seed_ranges_keep_the_order_given():
    assert parse_seeds("7") == [7]
    assert parse_seeds("10-12,0-1") == [10, 11, 12, 0, 1]
