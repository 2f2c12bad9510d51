"""The Triton launcher (sgg_kernels.triton_kernels.launch_triton) against the float64 reference, on
the core tests' shapes, layouts and operands, under TRITON_INTERPRET=1 on CPU tensors (conftest.py).

The registered ops route CPU tensors to the C++ kernels, so the launcher is called directly. The
interpreter truncates float32 -> bfloat16 (the GPU rounds to nearest), which the reference bound's one
ulp covers.
"""
import pytest
import torch

from helpers import DTYPES, LAYOUTS, assert_matches_reference, coefficients, make
from sgg_kernels import backends
from sgg_kernels.triton_kernels import launch_triton
from test_ops import PRESENCE, SHAPES, operands


def run(x, c, u, w, weights, step, out=None):
    out = torch.empty_like(c if x is None else x) if out is None else out
    launch_triton(out, x, c, u, w, weights, step)
    return out


def check_guide_and_step(x, c, u, w, weights, step):
    assert_matches_reference(run(None, c, u, w, weights, None), None, c, u, w, weights, None)
    assert_matches_reference(run(x, c, u, w, weights, step), x, c, u, w, weights, step)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_and_dtypes(shape, dtype):
    check_guide_and_step(*operands(shape, dtype, "contiguous", True, True, True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_u,has_w", PRESENCE)
@pytest.mark.parametrize("per_sample_w", [True, False])
def test_missing_operands_and_shared_weights(has_u, has_w, per_sample_w, dtype):
    check_guide_and_step(*operands((3, 5, 7), dtype, "contiguous", has_u, has_w, per_sample_w))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(2, 4, 9, 11), (3, 5, 7, 2, 3)])
def test_views_and_in_place(shape, dtype, layout):
    x, c, u, w, weights, step = operands(shape, dtype, layout, True, True, True)
    check_guide_and_step(x, c, u, w, weights, step)
    x_view = make(shape, dtype, layout, torch.Generator().manual_seed(7))
    x_before, inputs_before = x_view.clone(), [t.clone() for t in (c, u, w)]
    run(x_view, c, u, w, weights, step, out=x_view)  # in place into a (possibly strided) view
    assert_matches_reference(x_view, x_before, c, u, w, weights, step)
    assert all(torch.equal(t, before) for t, before in zip((c, u, w), inputs_before))


def test_mixed_layouts():
    g = torch.Generator().manual_seed(1)
    shape = (2, 6, 10, 4)
    x, c, u, w = (make(shape, torch.float32, layout, g) for layout in ("channels_last", "transpose", "chunk", "slice"))
    check_guide_and_step(x, c, u, w, coefficients(2, True, g), coefficients(2, True, g, -1.0, 1.0))


def test_in_place_into_a_view_leaves_the_rest_of_its_storage():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(2, 4, 6, 10, generator=g)
    x = base[:, 1:3, :, ::3]
    c, u, w = (make(tuple(x.shape), torch.float32, "transpose", g) for _ in range(3))
    weights, step = coefficients(2, True, g), coefficients(2, True, g, -1.0, 1.0)
    x_before, base_before = x.clone(), base.clone()
    run(x, c, u, w, weights, step, out=x)
    assert_matches_reference(x, x_before, c, u, w, weights, step)
    base_before[:, 1:3, :, ::3] = x
    assert torch.equal(base, base_before)


def test_more_per_sample_dims_than_one_launch_walks():
    # 6-D, every dim permuted: 5 per-sample dims that cannot be merged -> one launch per index of dim 1.
    g = torch.Generator().manual_seed(3)
    shape = (2, 3, 2, 3, 2, 3)
    x, c, u, w = (torch.randn(shape[::-1], generator=g).permute(5, 4, 3, 2, 1, 0) for _ in range(4))
    check_guide_and_step(x, c, u, w, coefficients(2, True, g), coefficients(2, True, g, -1.0, 1.0))


def test_unaligned_operands():
    # Each operand starts at a different element offset (none 16-byte aligned), odd sample size.
    g = torch.Generator().manual_seed(4)
    x, c, u, w = (torch.randn(3 * 37 + 4, generator=g)[i + 1:i + 1 + 3 * 37].view(3, 37) for i in range(4))
    check_guide_and_step(x, c, u, w, coefficients(3, True, g), coefficients(3, True, g, -1.0, 1.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transpose"])
def test_bit_for_bit_equal_to_the_cpu_kernel(dtype, layout):
    # Same rule, same order of operations, no FMA contraction in either (bf16 differs here only
    # because the interpreter truncates).
    x, c, u, w, weights, step = operands((3, 4, 9, 11), dtype, layout, True, True, True)
    cpu = torch.empty_like(x)
    backends.launcher("cpu")(cpu, x, c, u, w, weights, step)
    assert torch.equal(run(x, c, u, w, weights, step), cpu)


@pytest.mark.parametrize("shape", [(3, 5, 37, 41), (4, 2100), (5, 3, 5, 7)], ids=str)
@pytest.mark.parametrize("per_sample_w", [True, False])
def test_flat_blocks_that_span_two_samples(shape, per_sample_w):
    # Samples of 7585 and 2100 elements (not multiples of the 1024-element float32 block) make blocks
    # that start in one sample and end in the next, each half with its own coefficients; 105-element
    # samples take the per-sample blocks instead. Bit for bit against the CPU kernel.
    x, c, u, w, weights, step = operands(shape, torch.float32, "contiguous", True, True, per_sample_w)
    cpu = torch.empty_like(x)
    backends.launcher("cpu")(cpu, x, c, u, w, weights, step)
    assert torch.equal(run(x, c, u, w, weights, step), cpu)
    assert_matches_reference(run(None, c, u, w, weights, None), None, c, u, w, weights, None)
