"""The demo's EDM2 calibration regime: the tree mixture's exact score, EDM's schedule, the guided Heun
sampler (against a transcription of EDM2's loop, and with exact models), the score models and their cache."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sgg_kernels.demo import edm2
from sgg_kernels.demo.edm2 import (EDM2TreeConfig, EDM2TreeMixture, ScoreTrainConfig, load_or_train_score_model,
                                   power_ema_exponent)
from sgg_kernels.demo.edm_sampler import EDMSampler, edm_sigmas, sigma_to_t
from sgg_kernels.demo.study import Method, run_sampled_study
from sgg_kernels.schedule import GuidanceSchedule

SMALL_TREE = EDM2TreeConfig(depth=3, per_branch=3)  # 2 x 7 branches x 3 Gaussians


@pytest.fixture(scope="module")
def tree():
    return EDM2TreeMixture(SMALL_TREE)


def exact_denoiser(toy, cls):
    """The mixture's exact denoiser of class `cls` (-1: all classes) behind the sampler's interface."""
    return lambda x, sigma: toy.denoiser(x, sigma, torch.full((x.shape[0],), cls)).to(x.dtype)


def test_tree_has_edm2s_shape():
    toy = EDM2TreeMixture()
    assert toy.num_components == 2 * 8 * (2 ** 7 - 1)  # 127 branches of 8 Gaussians per class
    torch.testing.assert_close(toy.class_log_prior.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # The root branch of class A leaves EDM2's origin at 45 degrees (before the anisotropic scale), its
    # Gaussians at fractions linspace(0.07, 0.93, 8) of its length; class B's leaves at 225 degrees.
    scale, origin = torch.tensor(EDM2TreeConfig.scale), torch.tensor(EDM2TreeConfig.origin)
    for cls, angle in ((0, 0.25 * math.pi), (1, 1.25 * math.pi)):
        root = toy.mu[toy.components_of(cls)[:8]] / scale - origin
        along = root / root.norm(dim=1, keepdim=True)
        torch.testing.assert_close(along, torch.tensor([[math.cos(angle), math.sin(angle)]] * 8,
                                                       dtype=torch.float64))
        frac = root.norm(dim=1) / root.norm(dim=1)[-1] * 0.93
        torch.testing.assert_close(frac, torch.linspace(0.07, 0.93, 8, dtype=torch.float64))


@pytest.mark.parametrize("sigma", [0.01, 0.2, 3.0])
@pytest.mark.parametrize("cls", [0, -1])
def test_exact_score_matches_finite_differences(tree, sigma, cls):
    # log p(x; sigma) = log p_t(x / (1 + sigma)) - 2 log(1 + sigma) at t = sigma / (1 + sigma); its gradient
    # by central differences against (D(x) - x) / sigma^2, the score the training targets use.
    gen = torch.Generator().manual_seed(0)
    labels = torch.full((5,), cls)
    x = tree.sample(torch.zeros(5, dtype=torch.long), gen) + sigma * torch.randn(5, 2, dtype=torch.float64,
                                                                                 generator=gen)
    t = sigma / (1 + sigma)
    h = 1e-4 * sigma

    def logp(y):
        return tree.log_density(y / (1 + sigma), t, labels)

    fd = torch.stack([(logp(x + h * e) - logp(x - h * e)) / (2 * h) for e in torch.eye(2, dtype=torch.float64)], 1)
    score = (tree.denoiser(x, sigma, labels) - x) / sigma ** 2
    torch.testing.assert_close(score, fd, rtol=1e-5, atol=1e-5 / sigma)


def test_unconditional_density_weighs_classes_by_their_mass(tree):
    # p(x) = sum_c p(c) p(x | c) with EDM2's unequal class masses.
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    per_class = torch.stack([tree.log_density(x, 0.3, torch.full((7,), c)) for c in range(2)], 1)
    torch.testing.assert_close(tree.log_density(x, 0.3), (per_class + tree.class_log_prior).logsumexp(1))
    assert not torch.allclose(tree.class_log_prior, torch.full((2,), -math.log(2), dtype=torch.float64))


def test_edm_schedule_is_the_closed_form():
    sigmas = edm_sigmas(32, 0.002, 5.0, 7.0)
    assert sigmas.shape == (33,) and float(sigmas[-1]) == 0.0
    closed = [(5.0 ** (1 / 7) + i / 31 * (0.002 ** (1 / 7) - 5.0 ** (1 / 7))) ** 7 for i in range(32)]
    torch.testing.assert_close(sigmas[:-1], torch.tensor(closed, dtype=torch.float64), rtol=1e-14, atol=0)
    assert math.isclose(float(sigmas[0]), 5.0) and math.isclose(float(sigmas[31]), 0.002)
    with pytest.raises(ValueError, match="sigma_min"):
        edm_sigmas(8, 5.0, 0.002)
    with pytest.raises(ValueError, match="num_steps"):
        edm_sigmas(1)


def test_guided_heun_matches_a_transcription_of_edm2s_loop():
    # EDM2's guided denoiser D_guide.lerp(D_main, w), its Heun loop and Euler last step, written out
    # plainly; the sampler must agree with lam = w - 1 through the project's op.
    def main(x, s):
        return x / (1 + s[:, None] ** 2) + 0.1

    def guide(x, s):
        return 0.7 * x / (1 + s[:, None] ** 2)

    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    w = 3.0
    sigmas = [(5.0 ** (1 / 7) + i / 7 * (0.002 ** (1 / 7) - 5.0 ** (1 / 7))) ** 7 for i in range(8)] + [0.0]

    def denoise(x, s):
        s = torch.full((x.shape[0],), s)
        return guide(x, s).lerp(main(x, s), w)

    x = x0.clone()
    for i in range(8):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - denoise(x, s)) / s
        x_next = x + (s_next - s) * d
        if i < 7:
            x_next = x + (s_next - s) * (0.5 * d + 0.5 * (x_next - denoise(x_next, s_next)) / s_next)
        x = x_next
    for schedule, uncond, weak in ((GuidanceSchedule.autoguidance(w), None, guide),
                                   (GuidanceSchedule.cfg(w), guide, None)):
        out, nfe = EDMSampler(None, main, uncond, weak, num_steps=8)(schedule, x0, torch.zeros(6, dtype=torch.long))
        torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)
        assert nfe == 2 * (8 + 7)  # Heun: two evaluations a step but the last, two models each


def test_sgg_weights_switch_at_tau_in_sigma():
    sigmas = edm_sigmas(32)[:-1]
    weights = GuidanceSchedule.sgg(4.0, 3.0, 0.5).weights(sigma_to_t(sigmas))
    above = sigmas > 1.0  # t = 0.5 is sigma = 1
    assert bool((weights[above] == torch.tensor([3.0, 0.0])).all())
    assert bool((weights[~above] == torch.tensor([0.0, 2.0])).all())


def test_oracle_models_sample_to_the_noise_floor(tree):
    # Exact denoisers as the models: unguided Heun sampling lands within sampling noise of the exact class A
    # samples, AG with the main model as its own guide changes nothing, and CFG against the exact
    # unconditional denoiser moves the samples off.
    main = exact_denoiser(tree, 0)
    sampler = EDMSampler(tree, main, exact_denoiser(tree, -1), main, num_steps=16)
    methods = [Method("none", "", GuidanceSchedule()), Method("ag", "w=3", GuidanceSchedule.autoguidance(3.0)),
               Method("cfg", "s=4", GuidanceSchedule.cfg(4.0))]
    result = run_sampled_study(tree, sampler, methods, per_class=1024, classes=(0,), t_points=3, points_per_t=64,
                               progress=False)
    floor, none, ag, cfg = (r.quality["all"] for r in result.rows)
    # SW of 1024 points to exact ones: 0.016-0.018 for exact, 0.008-0.020 unguided, 0.13 CFG (seeds 0-2).
    assert none["sw"] < 1.5 * floor["sw"] + 0.01
    assert none["off"] <= floor["off"] + 0.01 and none["cover"] >= floor["cover"] - 0.05
    assert torch.equal(result.samples["ag w=3"], result.samples["none"])
    assert cfg["sw"] > 4 * floor["sw"] and cfg["cover"] < none["cover"]
    assert result.rows[1].verr_hi < 1e-9 and result.rows[1].verr_lo < 1e-9  # exact denoiser, exact velocity
    assert result.error_unit == "denoiser"


def test_ema_exponent_inverts_edm2s_std_formula():
    # EDM2's std of a power-function profile of exponent g: sqrt((g + 1) / ((g + 2)^2 (g + 3))).
    g = power_ema_exponent(0.010)
    assert math.isclose(math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))), 0.010, rel_tol=1e-9)


def test_score_model_trains_caches_and_reloads(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = ScoreTrainConfig(cls=0, width=8, layers=2, iterations=30, batch=64, pool_size=128)
    model = load_or_train_score_model(tree, config, "m", progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("trained although cached")
    with monkeypatch.context() as m:
        m.setattr(edm2, "train_score_model", no_training)
        cached = load_or_train_score_model(tree, config, "m")
    for a, b in zip(model.state_dict().values(), cached.state_dict().values()):
        assert torch.equal(a, b)
    # Thirty steps of exact score matching lower the sigma^2-weighted loss against the untrained network.
    x, sigma, target = edm2.score_targets(tree, config, 512, torch.Generator().manual_seed(5))

    def loss(net):
        return float((sigma[:, None] ** 2 * (net.score(x, sigma) - target).square()).mean())
    untrained = edm2.LogDensityMLP(8, 2)
    untrained.load_state_dict({k: torch.randn_like(v) if k != "gain" else torch.zeros(()) for k, v in
                               model.state_dict().items()})
    assert loss(model) < loss(untrained)
    # The denoiser is x + sigma^2 * the gradient of the log-density output.
    xr = x[:4].clone().requires_grad_(True)
    grad = torch.autograd.grad(model(xr, sigma[:4]).sum(), xr)[0]
    torch.testing.assert_close(model.denoiser(x[:4], sigma[:4]), x[:4] + sigma[:4, None] ** 2 * grad)


def test_demo_without_matplotlib_says_to_install_the_extra(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from sgg_kernels.demo.__main__ import main\n"
            f"main(['--out', {str(tmp_path)!r}, '--regime', 'shallow'])\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's sgg_kernels
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0
    assert "sgg_kernels[demo]" in out.stderr and "Traceback" not in out.stderr


def test_tree_draws_follow_edm2s_order():
    # EDM2 draws a branch's length, then each child's turn just before growing that child: with depth 2,
    # the root's length, child 1's turn, child 1's length, child 2's turn, child 2's length; per class.
    cfg = EDM2TreeConfig(depth=2, per_branch=2)
    toy = EDM2TreeMixture(cfg)
    draws = np.random.RandomState(cfg.seed).randn(10)
    root_len = 0.292 * (draws[0] * 0.2 + 1)
    child_len = 0.292 * 0.8 * (draws[2] * 0.2 + 1)
    mu = toy.mu[toy.components_of(0)].numpy() / np.asarray(cfg.scale)
    origin = np.asarray(cfg.origin)
    root_dir = np.array([math.cos(math.pi / 4), math.sin(math.pi / 4)])
    np.testing.assert_allclose(mu[0], origin + root_dir * root_len * 0.07, rtol=1e-12)
    angle = math.pi / 4 + (draws[1] * 0.2 + 1)
    child_dir = np.array([math.cos(angle), math.sin(angle)])
    np.testing.assert_allclose(mu[2], origin + root_dir * root_len + child_dir * child_len * 0.07, rtol=1e-12)
