"""The internal sgg::_launch runs a compiled kernel with no argument checks, for tests and benchmarks,
but it still refuses what would read or write out of bounds (issue 26 item 3): coefficient tensors
read with the wrong stride, and a step without x."""
import pytest
import torch

import sgg_kernels


def operands(batch=3):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 8, generator=g) for _ in range(3)]


@pytest.mark.parametrize("shape", [(1, 2), (2, 1), (4,), (3, 2, 1)])
@pytest.mark.parametrize("which", ["weights", "step"])
def test_coefficients_of_another_shape_are_refused(shape, which):
    out, x, cond = operands()
    coefs = {"weights": torch.rand(2), "step": torch.rand(2)}
    coefs[which] = torch.rand(shape)
    with pytest.raises(RuntimeError, match="weights and step must be contiguous float32 \\[2\\] or \\[B, 2\\]"):
        torch.ops.sgg._launch("cpu", out, x, cond, None, None, coefs["weights"], coefs["step"])


def test_a_step_without_x_is_refused():
    out, _, cond = operands()
    with pytest.raises(RuntimeError, match="x and step are given together"):
        torch.ops.sgg._launch("cpu", out, None, cond, None, None, torch.rand(2), torch.rand(2))


def test_valid_direct_calls_run():
    out, x, cond = operands()
    weights, step = torch.tensor([[0.5, 0.0]] * 3), torch.tensor([1.0, 0.5])
    torch.ops.sgg._launch("cpu", out, x, cond, None, None, weights, step)
    expected = sgg_kernels.guided_step_reference(x, cond, None, None, weights, step)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
