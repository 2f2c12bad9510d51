"""Our transcription of SiT's stochastic sampler, the oracle of the Euler-Maruyama tests.

It follows `euler_maruyama_sampler` and `get_score_from_velocity` of Westlake-AGI-Lab/SGG
(sit/samplers.py) step for step: float64 state, the model called in the latents' dtype at t_cur, the
noise drawn with randn_like before the step's evaluations and scaled by sqrt(2 t_cur) sqrt(|dt|),
guidance on the drift d inside the closed interval guidance_low <= t_cur <= guidance_high (only when
cfg_scale > 1), CFG against the null label num_classes, or, with self_guidance == "True" (the string,
as the official flag is), the weak model in place of the unconditional pass, and a last step from
0.04 to 0 that adds no noise. Two differences of form only: models are called model(x, t, y) and
return the velocity (SiT's return a tuple whose [0] is it), and the official's repeated last-step code
is the same `drift` function here.
"""
import math

import torch


def score_from_velocity(v, x, t, path_type):
    t = t.reshape(-1, *([1] * (x.dim() - 1)))
    if path_type == "linear":
        alpha, d_alpha = 1 - t, -torch.ones_like(x)
        sigma, d_sigma = t, torch.ones_like(x)
    elif path_type == "cosine":
        alpha, sigma = torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
        d_alpha, d_sigma = -math.pi / 2 * torch.sin(t * math.pi / 2), math.pi / 2 * torch.cos(t * math.pi / 2)
    else:
        raise NotImplementedError(path_type)
    reverse_alpha_ratio = alpha / d_alpha
    var = sigma**2 - reverse_alpha_ratio * d_sigma * sigma
    return (reverse_alpha_ratio * v - x) / var


def sit_euler_maruyama(model, latents, y, num_steps, cfg_scale=1.0, guidance_low=0.0, guidance_high=1.0,
                       path_type="linear", self_guidance="False", model_weak=None, num_classes=1000,
                       randn_like=torch.randn_like):
    y_null = torch.full_like(y, num_classes)
    dtype = latents.dtype
    t_steps = torch.linspace(1.0, 0.04, num_steps, dtype=torch.float64)
    t_steps = torch.cat([t_steps, torch.tensor([0.0], dtype=torch.float64)])
    x_next = latents.to(torch.float64)

    def drift(x_cur, t_cur):
        guiding = cfg_scale > 1.0 and guidance_low <= t_cur <= guidance_high
        self_guiding = guiding and self_guidance == "True"
        if guiding and not self_guiding:
            model_input, y_cur = torch.cat([x_cur] * 2), torch.cat([y, y_null])
        else:
            model_input, y_cur = x_cur, y
        time_input = torch.ones(model_input.size(0), dtype=torch.float64) * t_cur
        diffusion = 2 * t_cur

        def velocity(m):
            return m(model_input.to(dtype), time_input.to(dtype), y_cur).to(torch.float64)
        if self_guiding:
            v_weak = velocity(model_weak)
            v = torch.cat([velocity(model), v_weak])
            s = score_from_velocity(v, torch.cat([model_input] * 2), torch.cat([time_input] * 2), path_type)
            d_strong, d_weak = (v - 0.5 * diffusion * s).chunk(2)
            return d_weak + cfg_scale * (d_strong - d_weak)
        v = velocity(model)
        d = v - 0.5 * diffusion * score_from_velocity(v, model_input, time_input, path_type)
        if guiding:
            d_cond, d_uncond = d.chunk(2)
            d = d_uncond + cfg_scale * (d_cond - d_uncond)
        return d

    for t_cur, t_next in zip(t_steps[:-2], t_steps[1:-1]):
        dt = t_next - t_cur
        x_cur = x_next
        diffusion = 2 * t_cur
        eps = randn_like(x_cur)
        deps = eps * torch.sqrt(torch.abs(dt))
        x_next = x_cur + drift(x_cur, t_cur) * dt + torch.sqrt(diffusion) * deps
    t_cur, t_next = t_steps[-2], t_steps[-1]
    return x_next + (t_next - t_cur) * drift(x_next, t_cur)
