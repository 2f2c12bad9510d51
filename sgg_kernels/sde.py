"""SiT's Euler–Maruyama step, written as an affine update of x, the guided velocity and the step noise.

SiT samples its velocity models with the reverse SDE dx = [v - g^2/2 score] dt + g dW, g^2 = 2t, whose
score follows from the velocity on the interpolant x_t = alpha_t x0 + sigma_t eps:

    score = (r v - x) / var,    r = alpha / alpha',    var = sigma^2 - r sigma' sigma.

So the drift is d = a v + b x with a = 1 - t r / var and b = t / var (linear path: d = (2 - t) v + x;
cosine path: d = (1 + 2t/pi cot(pi t/2)) v + t x), and a step from t to t_next, dt = t_next - t < 0, is

    x_next = (1 + b dt) x + a dt v + sqrt(2 t |dt|) eps,

with no noise on the step into t = 0. Since a and b do not depend on the model, guiding d as SiT does
(d_u + s (d_c - d_u)) gives a (v_u + s (v_c - v_u)) + b x: the same as guiding v (docs/sampler.md).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

PATHS = ("linear", "cosine")


def check_path(path: str) -> str:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS} (SiT's interpolants), got {path!r}")
    return path


def drift_coefficients(t: Tensor, path: str) -> tuple[Tensor, Tensor]:
    """(a, b) of the drift d = a v + b x at noise levels t > 0 (float64), for SiT's interpolant `path`."""
    check_path(path)
    if path == "linear":  # alpha = 1 - t, sigma = t
        alpha, sigma, d_alpha, d_sigma = 1 - t, t, -torch.ones_like(t), torch.ones_like(t)
    else:  # alpha = cos(pi t / 2), sigma = sin(pi t / 2)
        alpha, sigma = torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
        d_alpha, d_sigma = -math.pi / 2 * sigma, math.pi / 2 * alpha
    r = alpha / d_alpha
    var = sigma**2 - r * d_sigma * sigma
    half_g2 = t  # g^2 / 2, with SiT's diffusion g^2 = 2t
    return 1 - half_g2 * r / var, half_g2 / var


def step_coefficients(grid: Tensor, path: str) -> Tensor:
    """float64 [N, 3] of (s0, s1, s2) per step of a grid [N + 1]: x_next = s0 x + s1 v_guided + s2 eps.

    The noise scale uses the step's current t, as SiT's sampler does; s2 = 0 on the step into t = 0."""
    t, t_next = grid[:-1], grid[1:]
    dt = t_next - t
    a, b = drift_coefficients(t, path)
    noise = torch.where(t_next > 0, torch.sqrt(2 * t * dt.abs()), torch.zeros_like(t))
    return torch.stack([1 + b * dt, a * dt, noise], dim=1)
