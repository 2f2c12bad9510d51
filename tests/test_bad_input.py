"""Bad input raises an error naming the argument and the problem, and guided_step_ leaves x untouched."""
import pytest
import torch

import sgg_kernels  # noqa: F401

B = 3


def good():
    g = torch.Generator().manual_seed(0)
    x, c, u, w = (torch.randn(B, 4, 5, generator=g) for _ in range(4))
    return dict(x=x, cond=c, uncond=u, weak=w, weights=torch.rand(B, 2, generator=g), step=torch.rand(2, generator=g))


def call(op, a):
    if op == "guide":
        return torch.ops.sgg.guide(a["cond"], a["uncond"], a["weak"], a["weights"])
    return getattr(torch.ops.sgg, op)(a["x"], a["cond"], a["uncond"], a["weak"], a["weights"], a["step"])


BAD = {
    "uncond shape": (dict(uncond=torch.randn(B, 4, 6)), ValueError, r"uncond has shape \[3, 4, 6\] but cond has shape"),
    "weak batch": (dict(weak=torch.randn(B + 1, 4, 5)), ValueError, "weak has shape"),
    "weak dtype": (dict(weak=torch.randn(B, 4, 5, dtype=torch.float64)), TypeError, "weak has dtype torch.float64"),
    "uncond device": (dict(uncond=torch.randn(B, 4, 5, device="meta")), ValueError, "uncond is on meta"),
    "integer cond": (dict(cond=torch.ones(B, 4, 5, dtype=torch.int64)), TypeError, "cond has dtype torch.int64"),
    "0-d cond": (dict(cond=torch.tensor(1.0)), ValueError, "cond must have a batch dimension"),
    "weights rank": (dict(weights=torch.rand(3)), ValueError, r"weights must have shape \[2\] or \[B, 2\] = \[3, 2\]"),
    "weights batch": (dict(weights=torch.rand(B + 1, 2)), ValueError, r"weights must have shape .* got \[4, 2\]"),
    "weights dtype": (dict(weights=torch.rand(B, 2, dtype=torch.float64)), TypeError, "weights must be float32"),
    "weights strided": (dict(weights=torch.rand(2, B).t()), ValueError, "weights must be contiguous"),
    "step shape": (dict(step=torch.rand(B, 3)), ValueError, "step must have shape"),
    "step dtype": (dict(step=torch.rand(2).half()), TypeError, "step must be float32"),
    "step none": (dict(step=None), TypeError, "step must be a Tensor, got None"),
    "x none step": (dict(x=None), TypeError, "x must be a Tensor, got None"),
}


@pytest.mark.parametrize("op", ["guide", "guided_step", "guided_step_"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_argument_is_named(op, case):
    change, error, message = BAD[case]
    if op == "guide" and "step" in case:
        pytest.skip("guide has no step")
    args = {**good(), **change}
    before = None if args["x"] is None else args["x"].clone()
    with pytest.raises(error, match=message):
        call(op, args)
    assert before is None or torch.equal(args["x"], before)


@pytest.mark.parametrize("op", ["guide", "guided_step", "guided_step_"])
def test_empty_tensors_give_empty_results(op):
    a = good()
    a.update({k: a[k][:, :0] for k in ("x", "cond", "uncond", "weak")})
    out = call(op, a)
    assert (a["x"] if op == "guided_step_" else out).shape == (B, 0, 5)


def test_in_place_into_an_expanded_view_is_refused():
    a = good()
    a["x"] = torch.randn(1, 4, 5).expand(B, 4, 5)
    with pytest.raises(ValueError, match="x has overlapping memory"):
        call("guided_step_", a)


def test_in_place_partially_overlapping_an_input_is_refused():
    a = good()
    storage = torch.randn(B * 20 + 1)
    a["x"], a["uncond"] = storage[:-1].view(B, 4, 5), storage[1:].view(B, 4, 5)
    before = a["x"].clone()
    with pytest.raises(ValueError, match="x partially overlaps uncond"):
        call("guided_step_", a)
    assert torch.equal(a["x"], before)


def test_in_place_on_a_tensor_requiring_grad_is_refused():
    a = good()
    a["x"].requires_grad_(True)
    with pytest.raises(RuntimeError, match="x requires grad"):
        call("guided_step_", a)


def test_non_tensor_operand_is_refused():
    with pytest.raises((TypeError, RuntimeError), match="uncond|Tensor"):
        torch.ops.sgg.guide(torch.randn(2, 3), 1.0, None, torch.rand(2))
