"""In-place writes and memory overlap: guided_step_ either refuses before writing or gives the float64
reference computed on copies, for any pair of views of one buffer. Operands with more strided dims
than the kernels' coalesced limit still run (on contiguous copies)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sgg_kernels  # noqa: F401
from sgg_kernels.reference import guided_step_reference

W, S = torch.tensor([0.5, 0.25]), torch.tensor([1.0, -0.1])


def test_disjoint_views_of_one_buffer_are_accepted():
    buf = torch.randn(3, 16)
    for x, cond in ((buf[:, :8], buf[:, 8:]), (buf.view(3, 8, 2)[..., 0], buf.view(3, 8, 2)[..., 1])):
        expected = guided_step_reference(x.clone(), cond.clone(), None, None, W, S)
        torch.ops.sgg.guided_step_(x, cond, None, None, W, S)
        torch.testing.assert_close(x.double(), expected)


@pytest.mark.parametrize("name", ["weights", "step"])
def test_coefficients_inside_x_are_refused(name):
    x = torch.randn(3, 4)
    args = dict(x=x, cond=torch.randn(3, 4), uncond=None, weak=None, weights=W, step=S)
    args[name] = x[0, :2]  # step values that the write would overwrite before they are read
    before = x.clone()
    with pytest.raises(RuntimeError, match=f"x (shares memory with|partially overlaps|may overlap) {name}"):
        torch.ops.sgg.guided_step_(*args.values())
    assert torch.equal(x, before)


def test_an_x_whose_elements_overlap_in_a_too_hard_layout_is_refused():
    x = torch.randn(8).as_strided((3, 3), (2, 1))  # rows overlap: torch's own check calls this "too hard"
    assert torch._debug_has_internal_overlap(x) == 2
    before = x.clone()
    with pytest.raises(RuntimeError, match="x has overlapping memory"):
        torch.ops.sgg.guided_step_(x, torch.randn(3, 3), None, None, W, S)
    assert torch.equal(x, before)


def test_an_x_with_interleaved_but_disjoint_strides_is_accepted():
    x = torch.randn(12).as_strided((3, 2), (2, 3))  # offsets 0,3,2,5,4,7: no two equal, not "dense"
    cond = torch.randn(3, 2)
    expected = guided_step_reference(x.clone(), cond, None, None, W, S)
    torch.ops.sgg.guided_step_(x, cond, None, None, W, S)
    torch.testing.assert_close(x.double(), expected)


def test_nine_dims_with_different_layouts_run_on_every_call():
    shape = (2, 2, 3, 2, 2, 3, 2, 2, 3)
    x = torch.randn(shape)
    cond = torch.randn(tuple(reversed(shape))).permute(*reversed(range(9)))
    uncond = torch.randn(shape[::2] + shape[1::2]).permute(0, 5, 1, 6, 2, 7, 3, 8, 4)
    assert cond.shape == uncond.shape == x.shape
    expected = guided_step_reference(x, cond, uncond, None, W, S)
    torch.testing.assert_close(torch.ops.sgg.guided_step(x, cond, uncond, None, W, S).double(), expected)
    compiled = torch.compile(lambda *a: torch.ops.sgg.guided_step(*a), fullgraph=True)
    torch.testing.assert_close(compiled(x, cond, uncond, None, W, S).double(), expected)


def test_an_expanded_x_under_compile_gives_the_sgg_message():
    x = torch.randn(1, 4).expand(3, 4)

    def step(x, cond):
        torch.ops.sgg.guided_step_(x, cond, None, None, W, S)
        return x

    with pytest.raises(Exception, match="x has overlapping memory"):
        torch.compile(step, fullgraph=True)(x, torch.randn(3, 4))


# Random pairs of 2-D views of one buffer: offsets, strides (including overlapping and transposed ones).
view = st.tuples(st.integers(0, 12), st.integers(1, 4), st.integers(1, 4), st.integers(0, 6), st.integers(0, 6))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(x_view=view, c_view=view, same_layout=st.booleans())
def test_any_pair_of_views_either_refuses_before_writing_or_matches_the_reference(x_view, c_view, same_layout):
    buf = torch.randn(64, dtype=torch.float64)
    off, rows, cols, s0, s1 = x_view
    x = buf.as_strided((rows, cols), (s0, s1), off)
    c_off = c_view[0]
    c_strides = (s0, s1) if same_layout else c_view[3:]
    cond = buf.as_strided((rows, cols), c_strides, c_off)
    x0, cond0 = x.clone(), cond.clone()
    buf_before = buf.clone()
    try:
        torch.ops.sgg.guided_step_(x, cond, None, None, W, S)
    except RuntimeError as e:
        assert "x " in str(e)
        assert torch.equal(buf, buf_before), "refused, but something was written"
        return
    torch.testing.assert_close(x, guided_step_reference(x0, cond0, None, None, W, S), rtol=1e-12, atol=1e-12)
    # An accepted call wrote nothing that cond reads: cond's elements outside x are unchanged.
    written = torch.zeros(64, dtype=torch.bool)
    written.as_strided(x.shape, x.stride(), x.storage_offset()).fill_(True)
    reads = torch.zeros(64, dtype=torch.bool)
    reads.as_strided(cond.shape, cond.stride(), cond.storage_offset()).fill_(True)
    same = x.stride() == cond.stride() and x.storage_offset() == cond.storage_offset()
    assert same or not (written & reads).any(), "accepted a call whose write overlaps cond"
