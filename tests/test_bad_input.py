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
    return getattr(torch.ops.sgg, op)(a["x"], a["cond"], a["uncond"], a["weak"], a["weights"], a["step"],
                                      a.get("noise"))


BAD = {
    "uncond shape": (dict(uncond=torch.randn(B, 4, 6)), RuntimeError, r"uncond has shape \[3, 4, 6\] but cond has shape"),
    "weak batch": (dict(weak=torch.randn(B + 1, 4, 5)), RuntimeError, "weak has shape"),
    "weak dtype": (dict(weak=torch.randn(B, 4, 5, dtype=torch.float64)), RuntimeError, "weak has dtype torch.float64"),
    "uncond device": (dict(uncond=torch.randn(B, 4, 5, device="meta")), RuntimeError, "uncond is on meta"),
    "integer cond": (dict(cond=torch.ones(B, 4, 5, dtype=torch.int64)), RuntimeError, "cond has dtype torch.int64"),
    "0-d cond": (dict(cond=torch.tensor(1.0)), RuntimeError, "cond must have a batch dimension"),
    "weights rank": (dict(weights=torch.rand(3)), RuntimeError, r"weights must have shape \[2\] or \[B, 2\] = \[3, 2\]"),
    "weights batch": (dict(weights=torch.rand(B + 1, 2)), RuntimeError, r"weights must have shape .* got \[4, 2\]"),
    "weights dtype": (dict(weights=torch.rand(B, 2, dtype=torch.float64)), RuntimeError, "weights must be float32"),
    "weights strided": (dict(weights=torch.rand(2, B).t()), RuntimeError, "weights must be contiguous"),
    "step shape": (dict(step=torch.rand(B, 3)), RuntimeError, "step must have shape"),
    "step dtype": (dict(step=torch.rand(2).half()), RuntimeError, "step must be float32"),
    "step none": (dict(step=None), RuntimeError, "step must be a Tensor, got None"),
    "x none step": (dict(x=None), RuntimeError, "x must be a Tensor, got None"),
    "step noise shape": (dict(noise=torch.randn(B, 4, 6), step=torch.rand(3)), RuntimeError,
                         r"noise has shape \[3, 4, 6\] but cond has shape \[3, 4, 5\]"),
    "step noise dtype": (dict(noise=torch.randn(B, 4, 5).half(), step=torch.rand(3)), RuntimeError,
                         "noise has dtype torch.float16"),
    "step columns with noise": (dict(noise=torch.randn(B, 4, 5)), RuntimeError,
                                r"step must have shape \[3\] or \[B, 3\] = \[3, 3\], got \[2\]"),
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
    with pytest.raises(RuntimeError, match="x has overlapping memory"):
        call("guided_step_", a)


def test_in_place_partially_overlapping_an_input_is_refused():
    a = good()
    storage = torch.randn(B * 20 + 1)
    a["x"], a["uncond"] = storage[:-1].view(B, 4, 5), storage[1:].view(B, 4, 5)
    before = a["x"].clone()
    with pytest.raises(RuntimeError, match="x partially overlaps uncond"):
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


def eager_and_traced_messages(op, args):
    """The message of the eager (compiled C++) refusal and of the traced one (the fake kernel, on fake
    tensors converted from the same arguments), or None where the call is accepted."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def message(arguments):
        try:
            call(op, arguments)
        except RuntimeError as e:
            return str(e).split("\n")[0]
        return None

    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake = {k: None if v is None else mode.from_tensor(v) for k, v in args.items()}
        traced = message(fake)
    return message(args), traced


@pytest.mark.parametrize("op", ["guide", "guided_step", "guided_step_"])
@pytest.mark.parametrize("case", [c for c in BAD if c not in ("uncond device", "step none", "x none step")])
def test_traced_calls_are_refused_with_the_eager_message(op, case):
    """One check vocabulary: csrc/checks.cpp (eager) and sgg_kernels/fake_kernels.py (traced) agree.
    (A meta-device operand is the fake kernel's in both, and None is refused by the schema first.)"""
    if op == "guide" and "step" in case:
        pytest.skip("guide has no step")
    eager, traced = eager_and_traced_messages(op, {**good(), **BAD[case][0]})
    assert eager is not None and eager == traced


@pytest.mark.parametrize("layout", ["expanded x", "partial overlap", "x is weights", "disjoint halves"])
def test_traced_in_place_overlap_checks_match_eager(layout):
    a = good()
    if layout == "expanded x":
        a["x"] = torch.randn(1, 4, 5).expand(B, 4, 5)
    elif layout == "partial overlap":
        storage = torch.randn(B * 20 + 1)
        a["x"], a["uncond"] = storage[:-1].view(B, 4, 5), storage[1:].view(B, 4, 5)
    elif layout == "x is weights":
        a["x"] = a["weights"] = torch.rand(B, 2)
        a["cond"], a["uncond"], a["weak"] = (torch.randn(B, 2) for _ in range(3))
    else:
        buf = torch.randn(B, 4, 10)
        a["x"], a["cond"] = buf[..., :5], buf[..., 5:]
    eager, traced = eager_and_traced_messages("guided_step_", a)
    assert eager == traced
    assert (eager is None) == (layout == "disjoint halves"), eager


W2S_BAD = {
    "u shape": dict(u=torch.randn(B, 6)),
    "weak dtype": dict(weak=torch.randn(B, 5, dtype=torch.float64)),
    "mid batch": dict(mid=torch.randn(B + 1, 5)),
    "coefs shape": dict(coefs=torch.rand(B, 2)),
    "coefs dtype": dict(coefs=torch.rand(3, dtype=torch.float64)),
    "integer v": dict(v=torch.ones(B, 5, dtype=torch.int32)),
    "grad shape": dict(grad=torch.rand(B + 1)),
}


@pytest.mark.parametrize("case", list(W2S_BAD))
def test_traced_w2s_loss_calls_are_refused_with_the_eager_message(case):
    from torch._subclasses.fake_tensor import FakeTensorMode

    g = torch.Generator().manual_seed(1)
    args = dict(grad=torch.rand(B, generator=g), **{k: torch.randn(B, 5, generator=g) for k in ("v", "u", "weak", "mid")},
                coefs=torch.rand(3, generator=g))
    args.update(W2S_BAD[case])

    def message(a):
        try:
            if case == "grad shape":
                torch.ops.sgg.w2s_loss_backward(a["grad"], a["v"], a["u"], a["weak"], a["mid"], a["coefs"])
            else:
                torch.ops.sgg.w2s_loss(a["v"], a["u"], a["weak"], a["mid"], a["coefs"])
        except RuntimeError as e:
            return str(e).split("\n")[0]
        return None

    with FakeTensorMode() as mode:
        traced = message({k: mode.from_tensor(v) for k, v in args.items()})
    eager = message(args)
    assert eager is not None and eager.startswith("sgg.w2s_loss") and eager == traced
