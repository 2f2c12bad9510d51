"""Mixed-request batches: each request's result equals sample() on it alone, and only the planned passes run."""
import pytest
import torch

from sgg_kernels import GuidanceSchedule
from sgg_kernels.batch_planner import RequestPosition, plan_step
from sgg_kernels.batching import GuidanceEngine, Request, sample_batch
from sgg_kernels.sampler import sample
from sgg_kernels.tables import GuidanceTables, timestep_grid

DIM = 6


class Elementwise:
    """A per-row velocity model whose output for a row does not depend on the rest of the batch.
    Records each call's batch size."""

    def __init__(self, scale=1.0):
        self.scale, self.batches = scale, []

    def __call__(self, x, t, cond):
        self.batches.append(x.shape[0])
        emb = cond["emb"] if isinstance(cond, dict) else cond
        return x * (1 - t[:, None]).to(x.dtype) - self.scale * emb * t[:, None].to(x.dtype)


class MLP(torch.nn.Module):
    """A small conditional MLP: its GEMMs may round differently at different batch sizes."""

    def __init__(self, seed, width=32):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(2 * DIM + 1, width), torch.nn.SiLU(), torch.nn.Linear(width, DIM))
        self.batches = []

    def forward(self, x, t, cond):
        self.batches.append(x.shape[0])
        return self.net(torch.cat([x, cond, t[:, None]], dim=1))


def request(seed, schedule, rows=1, **kw):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(rows, DIM, generator=g)
    return Request(cond, schedule, null_cond=torch.zeros(rows, DIM), noise=torch.randn(rows, DIM, generator=g),
                   name=f"r{seed}", **kw)


def alone(model, weak, r):
    """The reference: sample() on one request by itself."""
    return sample(model, r.cond, r.schedule, noise=r.noise, null_cond=r.null_cond, weak_model=weak,
                  timesteps=r.timesteps, num_steps=r.num_steps, grid=r.grid, shift=r.shift, solver=r.solver)


def mixed_requests():
    """SGG, CFG, AutoGuidance, interval CFG and no guidance; Euler and Heun; several grids and step counts."""
    return [
        request(0, GuidanceSchedule.sgg(4.5, 2.0, 0.6), rows=2, num_steps=10),                 # uncond first
        request(1, GuidanceSchedule.autoguidance(2.0), num_steps=7, solver="heun"),            # weak first
        request(2, GuidanceSchedule.cfg(4.5), rows=3, num_steps=12, grid="sd3", solver="heun"),
        request(3, GuidanceSchedule.interval(3.0, 0.3, 0.8), num_steps=9, grid="sd3", shift=2.0),
        request(4, GuidanceSchedule(), rows=2, num_steps=5),
        request(5, GuidanceSchedule.sgg(3.0, 1.5, 0.5) + GuidanceSchedule.autoguidance(1.2), num_steps=6,
                timesteps=torch.tensor([1.0, 0.9, 0.7, 0.45, 0.2, 0.04]), solver="heun"),     # all three passes
    ]


@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_each_request_equals_sampling_it_alone_bitwise(batch_cond_uncond):
    model, weak = Elementwise(), Elementwise(0.7)
    requests = mixed_requests()
    engine = GuidanceEngine(model, weak, batch_cond_uncond=batch_cond_uncond)
    handles = [engine.submit(r) for r in requests[:3]]
    for _ in range(3):                                    # the others join mid-way
        engine.step()
    handles += [engine.submit(r) for r in requests[3:]]
    engine.run()
    expected = [alone(Elementwise(), Elementwise(0.7), r) for r in requests]
    for r, h, ref in zip(requests, handles, expected):
        out = h.result()
        assert torch.equal(out.x, ref.x), r.name
        assert out.nfe == ref.nfe, r.name
        assert torch.equal(out.weights, ref.weights) and torch.equal(out.timesteps, ref.timesteps)
    # Only the planned passes ran: the engine's sample-evaluations are the sum of the requests' own.
    assert engine.evaluations == sum(ref.nfe for ref in expected) == sum(model.batches) + sum(weak.batches)


def test_mlp_requests_match_within_rounding():
    model, weak = MLP(0), MLP(1)
    requests = mixed_requests()
    outs = sample_batch(model, requests, weak)
    for r, out in zip(requests, outs):
        ref = alone(model, weak, r)
        torch.testing.assert_close(out.x, ref.x, rtol=0, atol=1e-5)
        assert out.nfe == ref.nfe


def test_passes_run_only_on_rows_that_need_them():
    """At one engine step an SGG request at high noise needs uncond and an AG request weak: the uncond
    forward sees only the SGG rows and the weak forward only the AG rows."""
    model, weak = Elementwise(), Elementwise(0.7)
    sgg = request(0, GuidanceSchedule.sgg(4.5, 2.0, 0.5), rows=2, num_steps=4)
    ag = request(1, GuidanceSchedule.autoguidance(2.0), rows=3, num_steps=4)
    plain = request(2, GuidanceSchedule(), rows=1, num_steps=4)
    engine = GuidanceEngine(model, weak, batch_cond_uncond=False)
    for r in (sgg, ag, plain):
        engine.submit(r)
    engine.step()
    assert model.batches == [6, 2] and weak.batches == [3]    # cond for all, uncond for SGG, weak for AG
    engine.run()
    # Steps 3-4 of SGG (t <= 0.5) use the weak model: then weak runs on 2 + 3 rows.
    assert weak.batches == [3, 3, 5, 5]


def test_planner_lays_out_each_pass_as_one_range():
    grid = timestep_grid(4)
    def position(schedule, rows, solver="euler"):
        return RequestPosition(GuidanceTables.build(schedule, grid, torch.device("cpu")), solver, rows)
    positions = [position(GuidanceSchedule.autoguidance(2.0), 1),            # weak
                 position(GuidanceSchedule(), 2),                              # none
                 position(GuidanceSchedule.cfg(3.0) + GuidanceSchedule.autoguidance(2.0), 1, "heun"),  # both
                 position(GuidanceSchedule.cfg(3.0), 3, "heun")]               # uncond
    plan = plan_step(positions, torch.device("cpu"))
    assert plan.order == (1, 3, 2, 0)
    assert plan.blocks == ((0, 2), (2, 5), (5, 6), (6, 7))
    assert (plan.uncond, plan.weak) == (slice(2, 6), slice(5, 7))
    assert plan.evaluations == 7 + 4 + 2
    assert [(g.start, g.stop, g.uncond, g.weak, g.predict_start) for g in plan.groups] == [
        (0, 2, False, False, 2), (2, 5, True, False, 2), (5, 6, True, True, 5), (6, 7, False, True, 7)]
    assert torch.equal(plan.weights[2:5], torch.tensor([[2.0, 0.0]] * 3))
    assert torch.equal(plan.step[:2], torch.tensor([[1.0, -0.25]] * 2))      # Euler
    assert torch.equal(plan.step[2:5], torch.tensor([[1.0, -0.125]] * 3))    # Heun's half step
    assert torch.equal(plan.t, torch.ones(7))


def test_conditions_may_be_pytrees_and_shapes_go_to_buckets():
    model = Elementwise()
    g = torch.Generator().manual_seed(3)
    dict_req = Request({"emb": torch.randn(2, DIM, generator=g), "flag": "a"}, GuidanceSchedule.cfg(2.0),
                       null_cond={"emb": torch.zeros(2, DIM), "flag": "a"}, noise=torch.randn(2, DIM, generator=g),
                       num_steps=5)
    wide = Request(torch.randn(1, 2 * DIM, generator=g), GuidanceSchedule.cfg(2.0), null_cond=torch.zeros(1, 2 * DIM),
                   noise=torch.randn(1, 2 * DIM, generator=g), num_steps=3)
    engine = GuidanceEngine(model)
    handles = [engine.submit(r) for r in (dict_req, wide, request(7, GuidanceSchedule.cfg(2.0), num_steps=4))]
    engine.run()
    assert len(engine.running) == 3                          # dict conds, another shape, plain tensors
    for r, h in zip((dict_req, wide), handles):
        assert torch.equal(h.result().x, alone(Elementwise(), None, r).x)


def test_max_rows_queues_requests_in_arrival_order():
    model = Elementwise()
    requests = [request(s, GuidanceSchedule.cfg(3.0), rows=2, num_steps=3 + s) for s in range(4)]
    engine = GuidanceEngine(model, max_rows=4)
    handles = [engine.submit(r) for r in requests]
    engine.step()
    assert max(model.batches) <= 2 * 4 and [h.position.step for h in handles] == [1, 1, 0, 0]
    engine.run()
    for r, h in zip(requests, handles):
        assert torch.equal(h.result().x, alone(Elementwise(), None, r).x)


def test_bad_requests_are_refused_at_submit_and_the_batch_runs_on():
    model = Elementwise()
    engine = GuidanceEngine(model, check_finite=True)
    good = request(0, GuidanceSchedule.cfg(3.0), rows=2, num_steps=6)
    handle = engine.submit(good)
    engine.step()
    g = torch.Generator().manual_seed(1)
    bad = [
        (request(1, GuidanceSchedule.autoguidance(2.0)), "request 'r1'.*weak_model.*no weak model"),
        (Request(torch.randn(3, DIM, generator=g), GuidanceSchedule.cfg(2.0), null_cond=torch.zeros(3, DIM),
                 noise=torch.randn(2, DIM), name="rows"), r"request 'rows'.*cond has shape \[3, 6\]"),
        (Request(torch.randn(1, DIM), GuidanceSchedule.cfg(2.0), null_cond=torch.zeros(1, DIM + 1),
                 noise=torch.randn(1, DIM), name="null"), "request 'null'.*null_cond must have cond's layout"),
        (Request(torch.randn(1, DIM), GuidanceSchedule.cfg(2.0), null_cond=torch.zeros(1, DIM),
                 noise=torch.full((1, DIM), float("nan")), name="nan"), "request 'nan'.*noise has non-finite"),
        (Request(torch.randn(1, DIM), GuidanceSchedule.cfg(2.0), noise=torch.randn(1, DIM), name="nonull"),
         "request 'nonull'.*null_cond"),
    ]
    for r, message in bad:
        with pytest.raises((ValueError, TypeError, FloatingPointError), match=message):
            engine.submit(r)
    assert len(engine.waiting) == 0
    engine.run()
    assert torch.equal(handle.result().x, alone(Elementwise(), None, good).x)


def test_a_non_finite_prediction_stops_only_its_request():
    def model(x, t, cond):
        return torch.where(cond.isnan(), cond, x - cond)
    ok = request(0, GuidanceSchedule.cfg(2.0), num_steps=4)
    broken = Request(torch.full((1, DIM), float("nan")), GuidanceSchedule(), noise=torch.randn(1, DIM), num_steps=4,
                     name="broken")
    engine = GuidanceEngine(model, check_finite=True)
    good, bad = engine.submit(ok), engine.submit(broken)
    engine.run()
    with pytest.raises(FloatingPointError, match="request 'broken', step 1/4.*cond prediction has non-finite"):
        bad.result()
    assert torch.equal(good.result().x, alone(model, None, ok).x)
