"""Autograd, opcheck and torch.compile for the sgg ops on CPU."""
import itertools

import pytest
import torch

import sgg_kernels  # noqa: F401
from helpers import DTYPES, coefficients, make

PRESENCE = list(itertools.product((True, False), repeat=2))


def operands(dtype, has_u, has_w, per_sample, requires_grad=False, shape=(3, 4, 5)):
    g = torch.Generator().manual_seed(0)
    x, c, u, w = (make(shape, dtype, gen=g).requires_grad_(requires_grad) for _ in range(4))
    return x, c, u if has_u else None, w if has_w else None, coefficients(shape[0], per_sample, g), \
        coefficients(shape[0], per_sample, g, -1.0, 1.0)


@pytest.mark.parametrize("has_u,has_w", PRESENCE)
@pytest.mark.parametrize("per_sample", [True, False])
def test_gradcheck_fp64(has_u, has_w, per_sample):
    x, c, u, w, weights, step = operands(torch.float64, has_u, has_w, per_sample, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: torch.ops.sgg.guide(t[0], t[1], t[2], weights), (c, u, w))
    assert torch.autograd.gradcheck(
        lambda *t: torch.ops.sgg.guided_step(t[0], t[1], t[2], t[3], weights, step), (x, c, u, w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["guide", "guided_step", "guided_step_"])
def test_opcheck(op, dtype):
    x, c, u, w, weights, step = operands(dtype, True, True, True)
    args = (c, u, w, weights) if op == "guide" else (x, c, u, w, weights, step)
    torch.library.opcheck(getattr(torch.ops.sgg, op).default, args)
    x, c, u, w, weights, step = operands(dtype, False, True, False)
    args = (c, u, w, weights) if op == "guide" else (x, c, u, w, weights, step)
    torch.library.opcheck(getattr(torch.ops.sgg, op).default, args)


def test_compiled_sampler_step_has_no_graph_break_and_no_recompile():
    def euler_step(x, c, u, w, weights, step):
        v = torch.ops.sgg.guide(c, u, w, weights)  # out-of-place op inside the graph
        torch.ops.sgg.guided_step_(x, c, u, w, weights, step)  # in-place op: functionalized
        return x, v

    compiled = torch.compile(euler_step, fullgraph=True)
    torch._dynamo.reset()
    for k, lam in enumerate((3.5, 1.25, 0.0)):  # new weight values every step, as in a sampler
        x, c, u, w, _, _ = operands(torch.float32, True, True, True, shape=(2, 4, 8, 8))
        weights = torch.tensor([[lam, 2.0], [lam, 0.5]])
        step = torch.tensor([1.0, -0.1 * (k + 1)])
        expected_x = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
        expected_v = torch.ops.sgg.guide(c, u, w, weights)
        with torch._dynamo.config.patch(error_on_recompile=k > 0):
            got_x, got_v = compiled(x, c, u, w, weights, step)
        assert torch.equal(got_x, expected_x) and torch.equal(x, expected_x) and torch.equal(got_v, expected_v)
