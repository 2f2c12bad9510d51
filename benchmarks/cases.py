"""What the benchmarks compare: sizes, inputs, the baselines users run today, and the fused op.

Shared by the pytest-benchmark suite and the table scripts, so every number comes from the same code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# SD3-style settings for one step: CFG scale 4.5 and SLG scale 3.0 both active, Euler dt = -1/28.
CFG_SCALE, SLG_SCALE, DT = 4.5, 3.0, -1.0 / 28


def size_for_bytes(megabytes: float, dtype: torch.dtype) -> tuple:
    """A [1, 16, H, H] latent of about `megabytes` MB per operand."""
    side = round(math.sqrt(megabytes * 1e6 / torch.finfo(dtype).bits * 8 / 16))
    return (1, 16, side, side)


def cpu_sizes(dtype: torch.dtype) -> dict:
    return {"sd3-1024 B=2": (2, 16, 128, 128), "video 21x90x160": (1, 16, 21, 90, 160),
            "77 MB": size_for_bytes(77, dtype)}


@dataclass
class Inputs:
    x: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    weak: torch.Tensor
    weights: torch.Tensor  # (lam_cdg, lam_cag) = (CFG_SCALE - 1, SLG_SCALE)
    step: torch.Tensor     # (1, DT)

    @property
    def bytes_moved(self) -> int:
        """Compulsory traffic of one guided step: read x, cond, uncond, weak; write x_next."""
        return 5 * self.x.numel() * self.x.element_size()


def make_inputs(shape, dtype, device="cpu", seed=0) -> Inputs:
    g = torch.Generator(device=device).manual_seed(seed)
    x, c, u, w = (torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype) for _ in range(4))
    weights = torch.tensor([CFG_SCALE - 1, SLG_SCALE], device=device)
    return Inputs(x, c, u, w, weights, torch.tensor([1.0, DT], device=device))


def eager_chain(x, cond, uncond, weak):
    """What a diffusers pipeline runs: CFG, the SLG term, then FlowMatchEulerDiscreteScheduler.step,
    which upcasts the sample to float32 and casts the result back."""
    v = uncond + CFG_SCALE * (cond - uncond)
    v = v + SLG_SCALE * (cond - weak)
    return (x.to(torch.float32) + DT * v).to(x.dtype)


def fused(inp: Inputs) -> torch.Tensor:
    return torch.ops.sgg.guided_step(inp.x, inp.cond, inp.uncond, inp.weak, inp.weights, inp.step)


def providers() -> dict:
    """name -> f(Inputs) for every way of computing one guided Euler step."""
    compiled = torch.compile(eager_chain, dynamic=False)
    return {
        "sgg fused": fused,
        "eager chain": lambda i: eager_chain(i.x, i.cond, i.uncond, i.weak),
        "torch.compile chain": lambda i: compiled(i.x, i.cond, i.uncond, i.weak),
    }


def copy_bandwidth_fn(inp: Inputs):
    """A same-size copy: the memory-bandwidth yardstick (reads and writes one operand)."""
    dst = torch.empty_like(inp.x)
    return lambda: dst.copy_(inp.cond), 2 * inp.x.numel() * inp.x.element_size()
