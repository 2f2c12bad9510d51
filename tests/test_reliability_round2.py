"""Reliability, round 2: in-place writes over the coefficients every sample reads, autograd in a process
that only loads the library, Segment strengths that are not floats, and the aliasing checks under every
torch.compile backend."""
import subprocess
import sys
import textwrap
from fractions import Fraction

import pytest
import torch

import sgg_kernels
from sgg_kernels.reference import guided_step_reference
from sgg_kernels.schedule import GuidanceSchedule, Segment


# Item 3: x is the weights or the step tensor. Sample 1 would read what sample 0 wrote, so it is refused.
def coefficient_alias_case(name):
    x = torch.tensor([20.0, 40.0])  # B = 2 samples of one element; also a valid [2] coefficient tensor
    args = dict(x=x, cond=torch.tensor([1.0, 2.0]), uncond=None, weak=None, weights=torch.tensor([0.5, 0.25]),
                step=torch.tensor([1.0, 0.5]))
    args[name] = x
    return x, args


@pytest.mark.parametrize("name", ["weights", "step"])
def test_x_that_is_a_coefficient_tensor_is_refused_before_writing(name):
    x, args = coefficient_alias_case(name)
    before = x.clone()
    with pytest.raises(RuntimeError, match=f"sgg.guided_step_: x shares memory with {name}"):
        torch.ops.sgg.guided_step_(*args.values())
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", ["weights", "step"])
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_in_place_step_refuses_a_coefficient_alias_too(name, backend):
    x, args = coefficient_alias_case(name)
    before = x.clone()
    torch._dynamo.reset()
    step = torch.compile(lambda *a: torch.ops.sgg.guided_step_(*a), backend=backend, fullgraph=True)
    with pytest.raises(Exception, match=f"x shares memory with {name}"):
        step(*args.values())
    assert torch.equal(x, before)


def test_per_sample_weights_row_inside_x_is_refused():
    weights = torch.tensor([[0.5, 0.25], [1.0, 2.0]])
    x = weights  # [B, 2] x over [B, 2] weights: a row's second weight would be read after its first was written
    with pytest.raises(RuntimeError, match="x shares memory with weights"):
        torch.ops.sgg.guided_step_(x, torch.randn(2, 2), None, None, weights, torch.tensor([1.0, 0.5]))


def test_x_that_is_cond_itself_still_runs_in_place():
    x = torch.randn(2, 3)
    expected = guided_step_reference(x.clone(), x.clone(), None, None, torch.tensor([0.5, 0.25]),
                                     torch.tensor([1.0, 0.5]))
    torch.ops.sgg.guided_step_(x, x, None, None, torch.tensor([0.5, 0.25]), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(x.double(), expected)


# Item 11: a process that loads only the library refuses, naming the input and the fix, every call whose
# inputs need a graph (torch's fallback would warn at backward and leave the gradient None); without a
# graph the ops run; `import sgg_kernels` registers the autograd formulas in their place.
LIBRARY_ONLY_AUTOGRAD = """
import sys, warnings, torch
torch.ops.load_library({path!r})
def refused(call, op, name):
    try:
        call()
    except RuntimeError as e:
        assert str(e).startswith(f"sgg.{{op}}: {{name}} requires grad") and "import it" in str(e), str(e)
        return
    raise AssertionError(f"sgg.{{op}} ran on an input that needs a graph")
c = torch.randn(2, 3, requires_grad=True)
w, x, v = torch.tensor([0.5, 0.25]), torch.randn(2, 3), torch.randn(2, 3, requires_grad=True)
coefs = torch.tensor([1.0, 0.5, 0.0])
refused(lambda: torch.ops.sgg.guide(c, None, None, w), "guide", "cond")
refused(lambda: torch.ops.sgg.guided_step(x, x, c, None, w, w), "guided_step", "uncond")
before = x.clone()
refused(lambda: torch.ops.sgg.guided_step_(x, x, None, c, w, w), "guided_step_", "weak")
assert torch.equal(x, before)  # refused before anything is written
refused(lambda: torch.ops.sgg.w2s_loss(v, x, None, None, coefs), "w2s_loss", "v")
refused(lambda: torch.ops.sgg.w2s_loss_backward(torch.ones(2), x, x, None, v, coefs), "w2s_loss_backward", "mid")
with torch.no_grad():  # no graph needed: it runs, and equals the formula
    assert torch.equal(torch.ops.sgg.guide(c, x, None, w), c + 0.5 * (c - x))
try:  # the argument checks still name the argument
    torch.ops.sgg.guide(x, None, None, torch.tensor([1.0]))
    raise AssertionError("bad weights accepted")
except RuntimeError as e:
    assert str(e).startswith("sgg.guide: weights must have shape"), str(e)
assert "sgg_kernels" not in sys.modules
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import sgg_kernels
assert not [w for w in caught if "verrid" in str(w.message)], [str(w.message) for w in caught]
torch.ops.sgg.guide(c, None, None, w).sum().backward()
assert torch.equal(c.grad, torch.full((2, 3), 1.0)), c.grad
print("ok")
"""


def test_library_only_process_refuses_autograd_and_import_restores_it():
    script = textwrap.dedent(LIBRARY_ONLY_AUTOGRAD.format(path=sgg_kernels.library_path()))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, cwd="/")
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


# Item 12: a Segment's numbers may be any real numbers (a Fraction, a numpy scalar); they are held as floats.
@pytest.mark.parametrize("field", ["lam", "lo", "hi", "d_w"])
def test_segment_takes_fractions_as_the_floats_they_equal(field):
    values = dict(kind="cdg", lam=2.0, lo=0.0, hi=1.0, d_w=0.5, shape="linear")
    exact = {**values, field: Fraction(1, 3)}
    rounded = {**values, field: float(Fraction(1, 3))}
    if field == "lo":
        exact["hi"] = rounded["hi"] = 0.9
    got, expected = GuidanceSchedule([Segment(**exact)]), GuidanceSchedule([Segment(**rounded)])
    grid = torch.linspace(1, 0, 9, dtype=torch.float64)
    assert type(getattr(got.segments[0], field)) is float
    assert torch.equal(got.weights(grid), expected.weights(grid))


# Item 13: a partial overlap of x and cond is refused by eager and by every torch.compile backend.
@pytest.mark.parametrize("backend", [None, "eager", "aot_eager", "inductor"])
def test_partial_overlap_of_x_and_cond_is_refused_in_every_backend(backend):
    buf = torch.randn(3, 10)
    x, cond = buf[:, :8], buf[:, 2:]  # columns 2..7 are both
    before = buf.clone()
    call = lambda *a: torch.ops.sgg.guided_step_(*a)  # noqa: E731
    if backend is not None:
        torch._dynamo.reset()
        call = torch.compile(call, backend=backend, fullgraph=True)
    with pytest.raises(Exception, match="x partially overlaps cond"):
        call(x, cond, None, None, torch.tensor([0.5, 0.25]), torch.tensor([1.0, 0.5]))
    assert torch.equal(buf, before)


# Item 12 (documented in docs/ops.md): an exported program is guarded on the coefficient form it was exported with.
class Guide(torch.nn.Module):
    def forward(self, cond, uncond, weights):
        return torch.ops.sgg.guide(cond, uncond, None, weights)


def test_exported_program_called_with_another_weights_form_fails_its_guard_as_documented():
    cond, uncond = torch.randn(3, 4), torch.randn(3, 4)
    batch = torch.export.Dim("batch")
    program = torch.export.export(Guide(), (cond, uncond, torch.tensor([0.5, 0.25])),
                                  dynamic_shapes=({0: batch}, {0: batch}, None)).module()
    torch.testing.assert_close(program(cond, uncond, torch.tensor([0.5, 0.25])),
                               torch.ops.sgg.guide(cond, uncond, None, torch.tensor([0.5, 0.25])))
    with pytest.raises(AssertionError, match=r"Guard failed: weights.size\(\)\[0\] == 2"):
        program(cond, uncond, torch.rand(3, 2))
    with pytest.raises(RuntimeError, match="sgg.guide: weights must be float32"):  # dtypes reach the ops' checks
        program(cond, uncond, torch.rand(2, dtype=torch.float64))
