"""Autograd around the ops: no path returns a wrong gradient or drops a graph without an error.

guide and guided_step give gradients to every operand, weights and step included, in reverse and
forward mode (torch.autograd.forward_ad and torch.func.jvp); guided_step_ bumps x's version and
refuses inputs whose graph it would drop."""
import itertools

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jvp

import sgg_kernels  # noqa: F401
from sgg_kernels.reference import guided_step_reference

OPTIONAL = list(itertools.product((True, False), repeat=2))


def operands(has_u=True, has_w=True, per_sample=True, seed=0, shape=(3, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    x, c, u, w = (torch.randn(shape, generator=g) for _ in range(4))
    coef_shape = (shape[0], 2) if per_sample else (2,)
    weights, step = torch.rand(coef_shape, generator=g) * 3, torch.rand(coef_shape, generator=g) - 0.5
    return x, c, u if has_u else None, w if has_w else None, weights, step


def reference_grads(x, c, u, w, weights, step, grad_out, is_step):
    leaves = [t.double().requires_grad_() if t is not None else None for t in (x, c, u, w, weights, step)]
    out = guided_step_reference(*(leaves if is_step else [None, *leaves[1:5], None]))
    (out * grad_out.double()).sum().backward()
    return [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("is_step", [True, False])
@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("has_u,has_w", OPTIONAL)
def test_every_input_gets_the_reference_gradient(is_step, per_sample, has_u, has_w):
    args = operands(has_u, has_w, per_sample)
    leaves = [None if t is None else t.clone().requires_grad_() for t in args]
    x, c, u, w, weights, step = leaves
    out = torch.ops.sgg.guided_step(*leaves) if is_step else torch.ops.sgg.guide(c, u, w, weights)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    expected = reference_grads(*args, grad_out, is_step)
    for name, got, want in zip("x c u w weights step".split(), leaves, expected):
        if not is_step and name in ("x", "step"):
            assert got.grad is None, name  # not inputs of guide
            continue
        if want is None:  # an input the formula does not use (weights without uncond and weak)
            assert got is None or got.grad is None or not got.grad.any(), name
            continue
        assert got.grad is not None, f"{name} got no gradient"
        torch.testing.assert_close(got.grad.double(), want, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("per_sample", [True, False])
def test_forward_mode_tangent_equals_the_reference(per_sample):
    x, c, u, w, weights, step = operands(per_sample=per_sample)
    tangents = [torch.randn_like(t) for t in (x, c, u, w, weights, step)]
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip((x, c, u, w, weights, step), tangents)]
        got = fwAD.unpack_dual(torch.ops.sgg.guided_step(*duals)).tangent
    _, want = jvp(lambda *a: guided_step_reference(*a), tuple(t.double() for t in (x, c, u, w, weights, step)),
                  tuple(t.double() for t in tangents))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_torch_func_jvp_equals_the_reference():
    x, c, u, w, weights, step = operands()
    tc, tw = torch.randn_like(c), torch.randn_like(weights)
    _, got = jvp(lambda c_, w_: torch.ops.sgg.guide(c_, u, w, w_), (c, weights), (tc, tw))
    _, want = jvp(lambda c_, w_: guided_step_reference(None, c_, u.double(), w.double(), w_, None),
                  (c.double(), weights.double()), (tc.double(), tw.double()))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="uncond has shape"):  # the library's checks still run under torch.func
        jvp(lambda c_: torch.ops.sgg.guide(c_, u[:, :2], None, weights), (c,), (tc,))


def test_in_place_bumps_the_version_so_autograd_sees_the_write():
    x, c, u, w, weights, step = operands()
    a = torch.randn_like(x, requires_grad=True)
    y = (a * x).sum()  # saves x for backward
    version = x._version
    torch.ops.sgg.guided_step_(x, c, u, w, weights, step)
    assert x._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("name", ["cond", "uncond", "weak", "weights", "step"])
def test_in_place_refuses_an_input_whose_graph_it_would_drop(name):
    args = dict(zip("x cond uncond weak weights step".split(), operands()))
    args[name] = args[name].clone().requires_grad_()
    before = args["x"].clone()
    with pytest.raises(RuntimeError, match=f"{name} requires grad"):
        torch.ops.sgg.guided_step_(*args.values())
    assert torch.equal(args["x"], before)
    with torch.no_grad():  # without a graph to keep, the write is fine
        torch.ops.sgg.guided_step_(*args.values())


def test_in_place_refuses_a_forward_mode_tangent():
    x, c, u, w, weights, step = operands()
    with fwAD.dual_level():
        dual = fwAD.make_dual(c, torch.randn_like(c))
        with pytest.raises(RuntimeError, match="cond carries a forward-mode tangent"):
            torch.ops.sgg.guided_step_(x, dual, u, w, weights, step)


def test_in_place_refuses_an_inference_tensor_outside_inference_mode():
    x, c, u, w, weights, step = operands()
    with torch.inference_mode():
        frozen = x.clone()
    before = frozen.clone()
    with pytest.raises(RuntimeError, match="x is an inference tensor"):
        torch.ops.sgg.guided_step_(frozen, c, u, w, weights, step)
    assert torch.equal(frozen, before)
    with torch.inference_mode():
        torch.ops.sgg.guided_step_(frozen, c, u, w, weights, step)
    torch.testing.assert_close(frozen.double(), guided_step_reference(x, c, u, w, weights, step))
