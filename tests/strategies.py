"""Hypothesis strategies for guidance-op inputs: shapes, dtypes, layouts, operand presence, coefficients."""
from __future__ import annotations

import torch
from hypothesis import strategies as st

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
LAYOUTS = ["contiguous", "chunk", "transpose", "slice", "offset"]


def arrange(values: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values, stored with the given memory layout."""
    if layout == "chunk":  # second half of a batched forward: contiguous at a storage offset
        return torch.cat([torch.full_like(values, float("nan")), values]).chunk(2)[1] if values.shape[0] else values
    if layout == "transpose" and values.dim() >= 2:
        return values.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "slice" and values.dim() >= 1:
        big = torch.full((*values.shape[:-1], 2 * values.shape[-1]), float("nan"), dtype=values.dtype)
        big[..., ::2] = values
        return big[..., ::2]
    if layout == "offset":
        storage = torch.full((values.numel() + 3,), float("nan"), dtype=values.dtype)
        view = storage[3:].view(values.shape)
        view.copy_(values)
        return view
    return values.clone()


@st.composite
def guidance_inputs(draw, dtypes=DTYPES, max_side=6):
    """(x, cond, uncond, weak, weights, step) with independent layouts per operand."""
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)

    def operand():
        values = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
        return arrange(values, draw(st.sampled_from(LAYOUTS)))

    x, cond = operand(), operand()
    uncond = operand() if draw(st.booleans()) else None
    weak = operand() if draw(st.booleans()) else None

    def coefs(low, high):
        rows = (shape[0], 2) if draw(st.booleans()) else (2,)
        return (torch.rand(rows, generator=g, dtype=torch.float64) * (high - low) + low).float()

    return x, cond, uncond, weak, coefs(0.0, 6.0), coefs(-1.5, 1.5)
