"""Property-based equivalence: every backend available here matches the float64 reference on
hypothesis-generated shapes (0-size to 5-D), layouts, dtypes, operands and coefficients."""
import pytest
import torch
from hypothesis import given, settings

import sgg_kernels  # noqa: F401
from sgg_kernels import backends
from helpers import assert_matches_reference
from strategies import guidance_inputs

LAUNCHERS = ["cpu", "torch"]


def run(launcher, x, cond, uncond, weak, weights, step, in_place):
    out = x.clone() if in_place else torch.empty_like(cond)
    backends.launcher(launcher)(out, out if in_place else None, cond, uncond, weak, weights,
                                step if in_place else None)
    return out


@pytest.mark.parametrize("launcher", LAUNCHERS)
@settings(max_examples=150, deadline=None)
@given(inputs=guidance_inputs())
def test_launcher_matches_reference(launcher, inputs):
    x, cond, uncond, weak, weights, step = inputs
    assert_matches_reference(run(launcher, *inputs, in_place=False), None, cond, uncond, weak, weights, None)
    assert_matches_reference(run(launcher, *inputs, in_place=True), x, cond, uncond, weak, weights, step)


@settings(max_examples=100, deadline=None)
@given(inputs=guidance_inputs())
def test_ops_agree_bit_for_bit_across_layouts(inputs):
    """The registered ops (validation, dispatch, strided or SIMD path) give the same bits as the
    dense kernel on contiguous copies, and the same bits when called again."""
    x, cond, uncond, weak, weights, step = inputs
    dense = [None if t is None else t.contiguous() for t in (x, cond, uncond, weak)]
    got = torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step)
    assert torch.equal(got, torch.ops.sgg.guided_step(*dense, weights, step))
    assert torch.equal(got, torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step))
