"""The synthetic study (sgg_kernels.demo): exact toy quantities, metric sanity, and a reduced end-to-end run."""
import math

import pytest
import torch

from sgg_kernels.demo import ExactVelocity, LeavesConfig, LeavesMixture, TrainConfig, load_or_train, run_study
from sgg_kernels.demo import models as demo_models
from sgg_kernels.demo.study import Method, sweep_methods
from sgg_kernels.schedule import GuidanceSchedule

TINY = LeavesConfig(classes=2, depth=1, per_branch=2)
SMALL = LeavesConfig(classes=3, depth=2, per_branch=2)


@pytest.fixture(scope="module")
def toy():
    return LeavesMixture(SMALL)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("cls", [0, 2, -1])  # -1: the mixture of all classes
def test_velocity_matches_finite_difference_score(toy, t, cls):
    # On the linear path E[eps | x_t] = -t * score, so v = E[eps - x0 | x_t] = (-t * score - x) / (1 - t).
    gen = torch.Generator().manual_seed(1)
    labels = torch.full((6,), cls)
    x0 = toy.sample(torch.full((6,), max(cls, 0)), gen)
    x = (1 - t) * x0 + t * torch.randn(6, 2, dtype=torch.float64, generator=gen)
    h = 1e-5
    score = torch.stack([(toy.log_density(x + h * e, t, labels) - toy.log_density(x - h * e, t, labels)) / (2 * h)
                         for e in torch.eye(2, dtype=torch.float64)], 1)
    expected = (-t * score - x) / (1 - t)
    torch.testing.assert_close(toy.velocity(x, t, labels), expected, rtol=1e-5, atol=1e-5)


def test_velocity_matches_monte_carlo():
    # Self-normalised importance sampling of E[eps - x0 | x_t = x] = E_w[(x - x0) / t] over exact x0 draws,
    # weights N(x; (1 - t) x0, t^2 I): independent of the closed form's Gaussian algebra.
    toy, t = LeavesMixture(TINY), 0.6
    gen = torch.Generator().manual_seed(2)
    x0 = toy.sample(torch.zeros(400_000, dtype=torch.long), gen)
    points = (1 - t) * toy.sample(torch.zeros(3, dtype=torch.long), gen) + t * torch.randn(3, 2, generator=gen,
                                                                                           dtype=torch.float64)
    for x in points:
        logw = -((x - (1 - t) * x0).square().sum(1)) / (2 * t * t)
        w = (logw - logw.max()).exp()
        estimate = (w[:, None] * (x - x0) / t).sum(0) / w.sum()
        torch.testing.assert_close(toy.velocity(x[None], t, torch.zeros(1, dtype=torch.long))[0], estimate,
                                   rtol=0, atol=2e-2)


def test_log_density_is_normalised(toy):
    # Riemann sum of p_t over a box, per class and for the mixture: 1 up to the grid and the tails.
    xs = torch.linspace(-5, 5, 201, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    cell = (xs[1] - xs[0]) ** 2
    for cls in (0, -1):
        mass = toy.log_density(grid, 0.3, torch.full((grid.shape[0],), cls)).exp().sum() * cell
        assert abs(float(mass) - 1) < 1e-3


def test_bad_input_is_named(toy):
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="labels must lie in"):
        toy.velocity(x, 0.5, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="labels must lie in"):
        toy.sample(torch.tensor([-1]), torch.Generator())  # sampling needs a class
    with pytest.raises(ValueError, match="x must be points"):
        toy.log_density(torch.zeros(4, 3), 0.5)
    with pytest.raises(ValueError, match="t must be a noise level"):
        toy.log_density(x, 1.5)


def test_exact_model_reaches_the_noise_floor(toy):
    # The metric's sanity check: with the ideal velocity as the model, unguided sampling lands within
    # sampling noise of the exact distribution and its velocity error is rounding; guidance moves it away.
    exact = ExactVelocity(toy)
    methods = [Method("none", "", GuidanceSchedule()), Method("cfg", "s=3", GuidanceSchedule.cfg(3.0))]
    result = run_study(toy, exact, exact, methods, per_class=256, num_steps=32, t_points=4, points_per_t=128,
                       progress=False)
    floor, none, cfg = (r.quality["all"] for r in result.rows)
    assert none["sw"] < 1.5 * floor["sw"] + 0.01
    assert none["cover"] >= floor["cover"] - 0.05 and none["off"] <= floor["off"] + 0.01
    assert result.rows[1].verr_hi < 1e-9 and result.rows[1].verr_lo < 1e-9
    assert result.rows[2].verr_hi > 1e-3  # CFG at s = 3 leaves the ideal class velocity
    assert cfg["sw"] > 2 * floor["sw"]


def test_reduced_pipeline_trains_caches_and_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    toy = LeavesMixture(TINY)
    main_cfg = TrainConfig(width=16, layers=2, steps=20, batch=64)
    weak_cfg = TrainConfig(width=8, layers=2, steps=10, batch=64, label_dropout=0.0)
    model = load_or_train(toy, main_cfg, "main")
    weak = load_or_train(toy, weak_cfg, "weak")
    assert len(list((tmp_path / "cache" / "sgg_kernels" / "demo").glob("*.pt"))) == 2

    # A second load reads the cache (training would fail here) and gives the same weights; the seed
    # makes a retrain reproduce them bit for bit.
    def no_training(*args, **kwargs):
        raise AssertionError("trained although cached")
    with monkeypatch.context() as m:
        m.setattr(demo_models, "train_velocity_model", no_training)
        cached = load_or_train(toy, main_cfg, "main")
    retrained = load_or_train(toy, main_cfg, "main", retrain=True)
    for a, b, c in zip(model.state_dict().values(), cached.state_dict().values(), retrained.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)

    methods = sweep_methods(scales=(2.0,), taus=(0.5,))
    steps = 8
    result = run_study(toy, model, weak, methods, per_class=64, num_steps=steps, t_points=4, points_per_t=64,
                       progress=False)
    assert [r.method for r in result.rows] == ["exact", "none", "cfg", "ag", "interval", "sgg"]
    for row in result.rows:
        for group in ["all", "class 0", "class 1"]:
            assert all(math.isfinite(v) for v in row.quality[group].values()), (row.method, group)
    for row in result.rows[1:]:
        assert math.isfinite(row.verr_hi) and math.isfinite(row.verr_lo)
    # Evaluations per sample follow each schedule's plan: cond every step, plus what guidance uses.
    assert [r.nfe for r in result.rows[1:]] == [
        m.schedule.plan(torch.linspace(1, 0, steps + 1)[:-1]).evaluations_per_sample for m in methods]
    assert set(result.samples) == {"exact"} | {m.label for m in methods}
    assert [r.featured for r in result.rows[1:]] == [m.featured for m in methods]

    pytest.importorskip("matplotlib")
    from sgg_kernels.demo.figures import plot_samples, plot_velocity_errors
    plot_samples(result, "tiny", tmp_path / "s.png", resolution=32)
    plot_velocity_errors(result, "tiny", tmp_path / "v.png")
    assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "v.png").stat().st_size > 0


def test_figures_show_each_methods_best_sw_beside_its_largest_scale():
    pytest.importorskip("matplotlib")
    from sgg_kernels.demo.figures import shown_rows
    from sgg_kernels.demo.study import Row, StudyResult

    def row(method, settings, sw, featured=False):
        return Row(method, settings, 1.0, {"all": {"sw": sw}}, featured=featured)
    rows = [row("exact", "", 0.01), row("none", "", 0.2, True), row("cfg", "s=1.5", 0.1),
            row("cfg", "s=3.0", 0.3, True),
            row("ag", "w=1.5", 0.4), row("ag", "w=3.0", 0.05, True)]
    result = StudyResult(None, None, rows, {}, None, None)
    shown = [(r.label, why) for r, why in shown_rows(result)]
    assert shown == [("none", ""), ("cfg s=3.0", "largest scale"), ("cfg s=1.5", "best SW 0.100"),
                     ("ag w=3.0", "largest scale, best SW 0.050")]
