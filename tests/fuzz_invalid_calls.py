"""Run as a script (tests/test_invalid_fuzz.py does, in a subprocess, so a crash is a test failure):
hypothesis-generated invalid calls of the sgg ops must raise a Python exception that names an
argument, and must leave x untouched."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sgg_kernels  # noqa: F401
from sgg_kernels.reference import guided_step_reference

ARGS = ["x", "cond", "uncond", "weak", "weights", "step"]
NAMES = ARGS + ["Tensor", "expected"]  # the dispatcher's own type errors name the expected type


def valid(b=3):
    g = torch.Generator().manual_seed(0)
    ops = {k: torch.randn(b, 4, 5, generator=g) for k in ("x", "cond", "uncond", "weak")}
    return {**ops, "weights": torch.rand(b, 2, generator=g), "step": torch.rand(2, generator=g)}


MUTATIONS = {
    "rank": lambda v: v.unsqueeze(0),
    "batch": lambda v: torch.cat([v, v[:1]]),
    "inner shape": lambda v: v[..., :-1] if v.dim() > 1 else v[:1],
    "dtype int": lambda v: v.long(),
    "dtype bool": lambda v: v > 0,
    "dtype complex": lambda v: v.to(torch.complex64),
    "dtype double": lambda v: v.double(),
    "meta device": lambda v: v.to("meta"),
    "none": lambda v: None,
    "float": lambda v: 1.5,
    "string": lambda v: "cond",
    "list": lambda v: [1.0, 2.0],
    "0-d": lambda v: v.flatten()[0],
    "expanded": lambda v: v[:1].expand_as(v),
    "nan values": lambda v: torch.full_like(v, float("nan")),  # valid: NaN propagates, nothing raises
}


@settings(max_examples=400, deadline=None, derandomize=True)
@given(op=st.sampled_from(["guide", "guided_step", "guided_step_"]),
       changes=st.lists(st.tuples(st.sampled_from(ARGS), st.sampled_from(sorted(MUTATIONS))), min_size=1,
                        max_size=2, unique_by=lambda change: change[0]))
def fuzz(op, changes):
    args = valid()
    for name, mutation in changes:
        args[name] = MUTATIONS[mutation](args[name])
    x = args["x"]
    x_before = x.clone() if isinstance(x, torch.Tensor) and x.device.type == "cpu" else None
    call_args = [args[k] for k in (ARGS[1:5] if op == "guide" else ARGS)]
    try:
        out = getattr(torch.ops.sgg, op)(*call_args)
    except (TypeError, ValueError, RuntimeError) as e:
        assert any(n in str(e) for n in NAMES), f"{op} {changes}: the message names no argument: {e}"
        if op == "guided_step_" and x_before is not None:
            assert torch.allclose(x, x_before, rtol=0, atol=0, equal_nan=True), f"{op} {changes}: x was written"
        return
    # Some mutations leave a valid call (a dropped optional operand, a changed x or step for guide,
    # an expanded x out of place): then the result must be the reference's.
    step = None if op == "guide" else args["step"]
    exact = guided_step_reference(None if op == "guide" else x_before, args["cond"], args["uncond"], args["weak"],
                                  args["weights"], step)
    got = x if op == "guided_step_" else out
    assert torch.allclose(got.double(), exact, rtol=1e-5, atol=1e-5, equal_nan=True), f"{op} {changes}: wrong"


if __name__ == "__main__":
    fuzz()
    print("fuzzed")
