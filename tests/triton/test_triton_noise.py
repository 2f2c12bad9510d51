"""The Triton launcher with a noise operand (a stochastic step, x_next = s0 x + s1 guide + s2 noise)
against the float64 reference, under TRITON_INTERPRET=1 on CPU tensors (conftest.py), on every
layout path of sgg_kernels.triton_kernels (FLAT, PER_SAMPLE, STRIDED), and bit for bit against the
CPU kernel where both round to nearest (not bf16: the interpreter truncates float32 -> bfloat16).
Without noise, test_triton_interpreter.py's tests hold the kernel to its previous results.
"""
import pytest
import torch

from helpers import DTYPES, LAYOUTS, assert_matches_reference, make
from sgg_kernels import backends
from sgg_kernels.triton_kernels import launch_triton
from test_ops import PRESENCE, operands


def noisy_operands(shape, dtype, layout, has_u, has_w, per_sample_coefs, noise_layout=None, seed=0):
    """test_ops.operands with a third step column and a noise tensor (in noise_layout, else layout)."""
    x, c, u, w, weights, _ = operands(shape, dtype, layout, has_u, has_w, per_sample_coefs, seed)
    g = torch.Generator().manual_seed(seed + 1)
    step = (torch.rand((shape[0], 3) if per_sample_coefs else (3,), generator=g, dtype=torch.float64) * 2 - 1).float()
    return x, c, u, w, weights, step, make(shape, dtype, noise_layout or layout, g)


def check_noisy_step(x, c, u, w, weights, step, noise):
    """Out of place, then in place (out is x): the reference's result, the CPU kernel's bits, and the
    inputs other than x untouched."""
    inputs = [t for t in (c, u, w, noise) if t is not None]
    inputs_before = [t.clone() for t in inputs]
    out = torch.empty_like(x)
    launch_triton(out, x, c, u, w, weights, step, noise)
    assert_matches_reference(out, x, c, u, w, weights, step, noise=noise)
    if c.dtype != torch.bfloat16:
        cpu = torch.empty_like(x)
        backends.launcher("cpu")(cpu, x, c, u, w, weights, step, noise)
        assert torch.equal(out, cpu)
    x_before = x.clone()
    launch_triton(x, x, c, u, w, weights, step, noise)
    assert_matches_reference(x, x_before, c, u, w, weights, step, noise=noise)
    assert torch.equal(x, out)
    assert all(torch.equal(t, before) for t, before in zip(inputs, inputs_before))


# (3, 5, 37, 41): 7585-element samples, FLAT blocks that start in one sample and end in the next, each
# half with its own s2; (3, 5, 7): 35-element samples, PER_SAMPLE blocks with per-sample coefficients
# (FLAT with shared ones); (1, 7): one sample.
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 5, 37, 41), (3, 5, 7), (1, 7)], ids=str)
@pytest.mark.parametrize("per_sample_coefs", [True, False])
def test_dense_paths(shape, dtype, per_sample_coefs):
    check_noisy_step(*noisy_operands(shape, dtype, "contiguous", True, True, per_sample_coefs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("has_u,has_w", PRESENCE)
@pytest.mark.parametrize("per_sample_coefs", [True, False])
def test_missing_operands_and_shared_step(has_u, has_w, per_sample_coefs, dtype):
    check_noisy_step(*noisy_operands((3, 5, 7), dtype, "contiguous", has_u, has_w, per_sample_coefs))


# chunk: dense, at offsets that are not 16-byte aligned in 2-byte dtypes; transpose and slice: STRIDED;
# channels_last: dense with permuted strides.
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("per_sample_coefs", [True, False])
def test_layouts(layout, dtype, per_sample_coefs):
    check_noisy_step(*noisy_operands((2, 4, 9, 11), dtype, layout, True, True, per_sample_coefs))


@pytest.mark.parametrize("noise_layout", ["transpose", "slice", "chunk"])
@pytest.mark.parametrize("shape", [(2, 4, 9, 11), (3, 5, 37, 41)], ids=str)
def test_noise_alone_in_another_layout(noise_layout, shape):
    # Every other operand contiguous: a transposed or sliced noise alone makes the call STRIDED (dense
    # detection must look at it too); a chunk half keeps it dense, noise at an offset.
    check_noisy_step(*noisy_operands(shape, torch.float16, "contiguous", True, True, True, noise_layout))


def test_in_place_into_a_view_with_strided_noise():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(2, 4, 6, 10, generator=g)
    x = base[:, 1:3, :, ::3]
    c, u, w, noise = (make(tuple(x.shape), torch.float32, "transpose", g) for _ in range(4))
    step = torch.rand(2, 3, generator=g) * 2 - 1
    base_before = base.clone()
    check_noisy_step(x, c, u, w, torch.rand(2, 2, generator=g), step, noise)
    base_before[:, 1:3, :, ::3] = x
    assert torch.equal(base, base_before)


def test_more_per_sample_dims_than_one_launch_walks():
    # 6-D, every dim permuted: 5 per-sample dims that cannot be merged -> one launch per index of dim 1,
    # each with its view of noise.
    g = torch.Generator().manual_seed(3)
    shape = (2, 3, 2, 3, 2, 3)
    x, c, u, w, noise = (torch.randn(shape[::-1], generator=g).permute(5, 4, 3, 2, 1, 0) for _ in range(5))
    check_noisy_step(x, c, u, w, torch.rand(2, 2, generator=g), torch.rand(2, 3, generator=g) * 2 - 1, noise)


def test_zero_noise_coefficient_is_the_deterministic_step():
    # s2 = 0 adds exact zeros to the rounded deterministic step, so the bits are those of the kernel
    # without noise: the noise term comes last, after s0 x + s1 guide is rounded.
    x, c, u, w, weights, step, noise = noisy_operands((3, 5, 37, 41), torch.float32, "contiguous", True, True, True)
    step[:, 2] = 0
    noisy, plain = torch.empty_like(x), torch.empty_like(x)
    launch_triton(noisy, x, c, u, w, weights, step, noise)
    launch_triton(plain, x, c, u, w, weights, step[:, :2].contiguous())
    assert torch.equal(noisy, plain)
