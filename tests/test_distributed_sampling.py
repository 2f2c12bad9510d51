"""Branch-parallel sample() on 2 CPU processes (gloo) is bitwise the single-process sample().

One spawn of 3 processes runs every case: ranks 0 and 1 form the branch group, rank 2 checks the
errors for a group of the wrong size and for a group it is not in. The workers write their results;
the assertions are made here.
"""
import datetime

import pytest
import torch
import torch.distributed as dist

from spawned_workers import free_port, spawn_and_wait

from sgg_kernels import GuidanceSchedule
from sgg_kernels.demo.models import VelocityMLP
from sgg_kernels.distributed import BranchGroup, assign
from sgg_kernels.sampler import sample
from sgg_kernels.schedule import Segment

pytestmark = [pytest.mark.multiprocess,
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="needs torch.distributed with gloo")]

WORLD, TIMEOUT_S, STEPS, CLASSES = 3, 90, 8, 3
SCHEDULES = {
    "sgg": GuidanceSchedule.sgg(3.0, 2.0, 0.5),                       # cond + one other branch at every step
    "interval": GuidanceSchedule.interval(3.0, 0.3, 0.7),             # cond-only steps around CFG steps
    "overlap": GuidanceSchedule((Segment("cdg", 2.0, 0.4, 1.0), Segment("cag", 1.0, 0.0, 0.6))),  # 3 predictions
    "none": GuidanceSchedule(),                                        # cond only everywhere
}


class ElementwiseModel(torch.nn.Module):
    """A velocity made of elementwise products and sums only: each sample's output is the same bits
    whatever else shares the batch (unlike a GEMM, whose kernel depends on the batch size)."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a, self.b = torch.randn(CLASSES + 1, 2, generator=g), torch.randn(CLASSES + 1, 2, generator=g)

    def forward(self, x, t, labels):
        return 0.5 * self.a[labels] * x + self.b[labels] * (1 - t[:, None]) + 0.3 * x.flip(1) * t[:, None]


class Recorder:
    """Keeps each call's whole-batch input x, by t: the latents every rank steps from."""

    def __init__(self, model, batch):
        self.model, self.batch, self.inputs = model, batch, []

    def __call__(self, x, t, cond):
        if x.shape[0] == self.batch:
            self.inputs.append((float(t[0]), x.clone()))
        return self.model(x, t, cond)


def make_models(kind):
    if kind == "elementwise":
        return ElementwiseModel(0), ElementwiseModel(1)
    torch.manual_seed(0)
    return VelocityMLP(CLASSES, 32, 3).eval(), VelocityMLP(CLASSES, 16, 3).eval()


# (model kind, batch, split_batch, single-process batch_cond_uncond values it must equal)
SETUPS = [("elementwise", 7, True, (True, False)), ("mlp", 3, False, (False,))]


def run_cases(group):
    results = {}
    for kind, batch, split, batched in SETUPS:
        model, weak = make_models(kind)
        g = torch.Generator().manual_seed(1)
        noise, labels = torch.randn(batch, 2, generator=g), torch.randint(0, CLASSES, (batch,), generator=g)
        null = torch.full((batch,), CLASSES)
        for name, schedule in SCHEDULES.items():
            for solver in ("euler", "heun"):
                recorder = Recorder(model, batch)
                common = dict(noise=noise, null_cond=null, weak_model=weak, num_steps=STEPS, solver=solver)
                out = sample(recorder, labels, schedule, branch_group=BranchGroup(group, split), **common)
                single = Recorder(model, batch)  # its cond call at each t sees the single process's latents
                ref = {b: sample(single if not b else model, labels, schedule, batch_cond_uncond=b, **common)
                       for b in batched}
                results[kind, name, solver] = dict(x=out.x, nfe=out.nfe, inputs=recorder.inputs,
                                                   single_inputs=single.inputs,
                                                   ref={b: (r.x, r.nfe) for b, r in ref.items()})
    return results


def expect_error(fn, error):
    try:
        fn()
    except error as e:
        return str(e)
    return None


def worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        pair = dist.new_group([0, 1])  # every rank takes part in creating it
        model, weak = make_models("elementwise")
        labels = torch.zeros(4, dtype=torch.long)
        call = dict(noise=torch.zeros(4, 2), null_cond=labels + CLASSES, weak_model=weak, num_steps=2)
        if rank < 2:
            torch.save(run_cases(pair), f"{out_dir}/rank{rank}.pt")
        else:
            errors = {"world": expect_error(lambda: sample(model, labels, SCHEDULES["sgg"], branch_group=dist.group.WORLD,
                                                           **call), ValueError),
                      "outsider": expect_error(lambda: sample(model, labels, SCHEDULES["sgg"], branch_group=pair,
                                                              **call), ValueError)}
            torch.save(errors, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.barrier()
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("branch_parallel")
    spawn_and_wait(worker, (free_port(), str(out_dir)), WORLD, 2 * TIMEOUT_S,
                   f"the {WORLD}-process branch-parallel run")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


CASES = [(kind, name, solver) for kind, *_ in SETUPS for name in SCHEDULES for solver in ("euler", "heun")]


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_branch_parallel_is_bitwise_single_process(results, case):
    rank0, rank1 = results[0][case], results[1][case]
    assert bool(torch.isfinite(rank0["x"]).all())
    assert torch.equal(rank0["x"], rank1["x"])  # the latents agree on both ranks without a broadcast
    for batched, (x, nfe) in rank0["ref"].items():
        assert torch.equal(rank0["x"], x), f"differs from sample(batch_cond_uncond={batched})"
        assert rank0["nfe"] == nfe
    assert rank1["ref"].keys() == rank0["ref"].keys()


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_every_rank_steps_from_the_same_latents(results, case):
    """Each whole-batch evaluation on either rank saw the latents the single process has at that t."""
    expected = {}  # t -> the x of the single process's cond calls there (Heun evaluates some t twice)
    for t, x in results[0][case]["single_inputs"]:
        expected.setdefault(t, []).append(x)
    seen = results[0][case]["inputs"] + results[1][case]["inputs"]
    for t, x in seen:
        assert any(torch.equal(x, e) for e in expected[t]), f"a rank's input at t={t} is not the single process's"


def test_group_of_wrong_size_or_without_this_rank_is_refused(results):
    errors = results[2]
    assert "exactly 2 ranks" in errors["world"] and "group of 3" in errors["world"]
    assert "does not contain this process" in errors["outsider"]


@pytest.mark.parametrize("branches,split,expected", [
    (("cond",), True, ([("cond", 0, 4)], [("cond", 4, 7)])),
    (("cond",), False, ([("cond", 0, 7)], [("cond", 0, 7)])),
    (("cond", "weak"), True, ([("cond", 0, 7)], [("weak", 0, 7)])),
    (("cond", "uncond", "weak"), True, ([("cond", 0, 7), ("weak", 0, 4)], [("uncond", 0, 7), ("weak", 4, 7)])),
    (("cond", "uncond", "weak"), False, ([("cond", 0, 7), ("weak", 0, 7)], [("uncond", 0, 7)])),
])
def test_assignment_covers_each_prediction_once(branches, split, expected):
    assert assign(branches, 7, split) == expected
