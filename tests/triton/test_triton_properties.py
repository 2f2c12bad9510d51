"""Property-based equivalence for the Triton launcher under the interpreter: hypothesis-generated
shapes (0-size to 5-D), layouts, dtypes, operands and coefficients against the float64 reference,
and the same bits as the CPU C++ kernel where both round to nearest (not bf16: the interpreter
truncates float32 -> bfloat16)."""
import torch
from hypothesis import given, settings

from helpers import assert_matches_reference
from sgg_kernels import backends
from sgg_kernels.triton_kernels import launch_triton
from strategies import guidance_inputs


@settings(max_examples=60, deadline=None)
@given(inputs=guidance_inputs(max_side=5))
def test_triton_matches_reference_and_cpu(inputs):
    x, cond, uncond, weak, weights, step = inputs
    out = torch.empty_like(cond)
    launch_triton(out, None, cond, uncond, weak, weights, None)
    assert_matches_reference(out, None, cond, uncond, weak, weights, None)
    x_next = x.clone()
    launch_triton(x_next, x_next, cond, uncond, weak, weights, step)
    assert_matches_reference(x_next, x, cond, uncond, weak, weights, step)
    if cond.dtype != torch.bfloat16:
        cpu = x.clone()
        backends.launcher("cpu")(cpu, cpu, cond, uncond, weak, weights, step)
        assert torch.equal(x_next, cpu)
