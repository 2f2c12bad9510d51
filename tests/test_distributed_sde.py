"""Branch-parallel sample(solver="euler_maruyama") on 2 CPU processes (gloo): both ranks draw the same step
noise from generators seeded alike, so the latents stay bitwise identical on the ranks, and bitwise the
single-process sample().

One spawn of 2 processes runs every case; the workers write their results and the assertions are
made here. The models, schedules and setups are test_distributed_sampling's (the ODE solvers' test).
"""
import datetime

import pytest
import torch
import torch.distributed as dist

from spawned_workers import free_port, spawn_and_wait
from test_distributed_sampling import CLASSES, SCHEDULES, SETUPS, STEPS, Recorder, make_models

from sgg_kernels.distributed import BranchGroup
from sgg_kernels.sampler import sample

pytestmark = [pytest.mark.multiprocess,
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="needs torch.distributed with gloo")]

WORLD, TIMEOUT_S, SEED = 2, 90, 3
# (path, how the step noise is seeded): one generator, one per sample, or the global stream seeded alike.
VARIANTS = (("linear", "generator"), ("cosine", "per_sample"), ("linear", "global"))


def generators(stream, batch):
    if stream == "generator":
        return torch.Generator().manual_seed(SEED)
    if stream == "per_sample":
        return [torch.Generator().manual_seed(SEED + b) for b in range(batch)]
    torch.manual_seed(SEED)
    return None


def run_cases(group):
    results = {}
    for kind, batch, split, batched in SETUPS:
        model, weak = make_models(kind)
        g = torch.Generator().manual_seed(1)
        noise, labels = torch.randn(batch, 2, generator=g), torch.randint(0, CLASSES, (batch,), generator=g)
        common = dict(noise=noise, null_cond=torch.full((batch,), CLASSES), weak_model=weak, num_steps=STEPS,
                      grid="sit_sde", solver="euler_maruyama")
        for name, schedule in SCHEDULES.items():
            for path, stream in VARIANTS:
                recorder = Recorder(model, batch)
                out = sample(recorder, labels, schedule, path=path, generator=generators(stream, batch),
                             branch_group=BranchGroup(group, split), **common)
                single = Recorder(model, batch)  # its cond call at each t sees the single process's latents
                ref = {b: sample(single if not b else model, labels, schedule, path=path, batch_cond_uncond=b,
                                 generator=generators(stream, batch), **common) for b in batched}
                results[kind, name, path, stream] = dict(x=out.x, nfe=out.nfe, inputs=recorder.inputs,
                                                         single_inputs=single.inputs,
                                                         ref={b: (r.x, r.nfe) for b, r in ref.items()})
    return results


def worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        torch.save(run_cases(dist.group.WORLD), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.barrier()
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("branch_parallel_sde")
    spawn_and_wait(worker, (free_port(), str(out_dir)), WORLD, 2 * TIMEOUT_S,
                   f"the {WORLD}-process branch-parallel SDE run")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


CASES = [(kind, name, *variant) for kind, *_ in SETUPS for name in SCHEDULES for variant in VARIANTS]


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_branch_parallel_sde_is_bitwise_single_process(results, case):
    rank0, rank1 = results[0][case], results[1][case]
    assert bool(torch.isfinite(rank0["x"]).all())
    assert torch.equal(rank0["x"], rank1["x"])  # the same noise on both ranks: no broadcast needed
    for batched, (x, nfe) in rank0["ref"].items():
        assert torch.equal(rank0["x"], x), f"differs from sample(batch_cond_uncond={batched})"
        assert rank0["nfe"] == nfe


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_every_rank_steps_from_the_single_process_latents(results, case):
    expected = dict(results[0][case]["single_inputs"])  # t -> x: one evaluation per step (no Heun)
    for t, x in results[0][case]["inputs"] + results[1][case]["inputs"]:
        assert torch.equal(x, expected[t]), f"a rank's input at t={t} is not the single process's"
