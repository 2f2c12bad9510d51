"""Every op on CPU against the float64 reference: shapes, layouts, missing operands, weights, dtypes."""
import itertools

import pytest
import torch

import sgg_kernels  # noqa: F401  (registers torch.ops.sgg)
from helpers import (DTYPES, LAYOUTS, assert_matches_reference, available_capabilities, coefficients, make,
                     simd_build)

SHAPES = [(1, 7), (3, 5, 7), (2, 4, 9, 11), (1, 3, 2, 5, 6), (2, 16, 33, 17), (0, 4), (3, 0, 2)]
PRESENCE = list(itertools.product((True, False), repeat=2))  # (uncond present, weak present)


def operands(shape, dtype, layout, has_u, has_w, per_sample_w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, c, u, w = (make(shape, dtype, layout, g) for _ in range(4))
    weights = coefficients(shape[0], per_sample_w, g)
    step = coefficients(shape[0], per_sample_w, g, low=-1.0, high=1.0)
    return x, c, u if has_u else None, w if has_w else None, weights, step


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("has_u,has_w", PRESENCE)
@pytest.mark.parametrize("per_sample_w", [True, False])
def test_every_op_matches_reference(shape, dtype, has_u, has_w, per_sample_w):
    x, c, u, w, weights, step = operands(shape, dtype, "contiguous", has_u, has_w, per_sample_w)
    assert_matches_reference(torch.ops.sgg.guide(c, u, w, weights), None, c, u, w, weights, None)
    assert_matches_reference(torch.ops.sgg.guided_step(x, c, u, w, weights, step), x, c, u, w, weights, step)
    x_in_place = x.clone()
    torch.ops.sgg.guided_step_(x_in_place, c, u, w, weights, step)
    assert_matches_reference(x_in_place, x, c, u, w, weights, step)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(2, 4, 9, 11), (3, 5, 7, 2, 3)])
def test_views_match_reference_and_dense_path_bit_for_bit(shape, dtype, layout):
    x, c, u, w, weights, step = operands(shape, dtype, layout, True, True, True)
    out = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
    assert_matches_reference(out, x, c, u, w, weights, step)
    dense = torch.ops.sgg.guided_step(*(t.contiguous() for t in (x, c, u, w)), weights, step)
    assert torch.equal(out, dense)  # strided walk and SIMD kernel apply the same rule in the same order
    x_view = x.clone() if layout == "contiguous" else make(shape, dtype, layout)
    expected = torch.ops.sgg.guided_step(x_view, c, u, w, weights, step)
    torch.ops.sgg.guided_step_(x_view, c, u, w, weights, step)  # in place into a strided view
    assert torch.equal(x_view, expected)


def test_mixed_layouts_take_the_strided_path_correctly():
    g = torch.Generator().manual_seed(1)
    shape = (2, 6, 10, 4)
    c = make(shape, torch.float32, "transpose", g)
    u = make(shape, torch.float32, "chunk", g)
    w = make(shape, torch.float32, "slice", g)
    weights = coefficients(2, True, g)
    assert_matches_reference(torch.ops.sgg.guide(c, u, w, weights), None, c, u, w, weights, None)


def test_in_place_may_alias_cond():
    g = torch.Generator().manual_seed(2)
    c, u = make((2, 3, 8), torch.float32, gen=g), make((2, 3, 8), torch.float32, gen=g)
    weights, step = coefficients(2, True, g), coefficients(2, True, g)
    expected = torch.ops.sgg.guided_step(c, c, u, None, weights, step)
    torch.ops.sgg.guided_step_(c, c, u, None, weights, step)
    assert torch.equal(c, expected)


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_each_simd_build_matches_reference(capability, dtype):
    with simd_build(capability):
        for has_u, has_w in PRESENCE:
            x, c, u, w, weights, step = operands((3, 4, 37, 5), dtype, "contiguous", has_u, has_w, True, seed=3)
            out = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
            assert_matches_reference(out, x, c, u, w, weights, step)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_simd_build_gives_the_same_bits(dtype):
    x, c, u, w, weights, step = operands((3, 4, 37, 5), dtype, "contiguous", True, True, True, seed=6)
    results = []
    for name in available_capabilities():
        with simd_build(name):
            results.append(torch.ops.sgg.guided_step(x, c, u, w, weights, step))
    for other in results[1:]:
        assert torch.equal(results[0], other)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_results_are_deterministic_bit_for_bit_at_any_thread_count(dtype):
    x, c, u, w, weights, step = operands((3, 7, 131, 69), dtype, "contiguous", True, True, True)  # tasks split samples off-vector
    first = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
    for _ in range(3):
        assert torch.equal(torch.ops.sgg.guided_step(x, c, u, w, weights, step), first)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # other task boundaries: elements move between SIMD body and scalar tail
        assert torch.equal(torch.ops.sgg.guided_step(x, c, u, w, weights, step), first)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_simd_rounding_to_16_bits_matches_torch_on_special_values(capability, dtype):
    """The SIMD body rounds its float32 results to 16 bits as the scalar path (c10's conversion) does:
    nearest even, overflow to inf, NaN as c10 writes it. (The AVX2 build once
    checked NaN with a vector compare that GCC turned into 16 scalar compares; this pins the bits of
    its replacement.)"""
    big, nan, inf = torch.finfo(dtype).max, float("nan"), float("inf")
    c = torch.cat([torch.tensor([[nan, -nan, inf, -inf, big, -big, 0.0, -0.0, 1.0, -1.5]]),
                   torch.randn(1, 300, generator=torch.Generator().manual_seed(7))], 1).to(dtype)
    u = torch.cat([torch.tensor([[0.0, 0.0, inf, 0.0, -big, big, 0.0, 0.0, 1.0, -1.5]]),
                   torch.randn(1, 300, generator=torch.Generator().manual_seed(8))], 1).to(dtype)
    weights = torch.tensor([1.0 / 3.0, 0.0])  # 1/3 makes inexact products, so most outputs round
    with simd_build(capability):
        out = torch.ops.sgg.guide(c, u, None, weights)
    assert out[0, :6].isnan().tolist() == [True, True, True, False, False, False]  # inf - inf is NaN
    assert out[0, 3:6].tolist() == [-inf, inf, -inf]  # big + (big - (-big)) / 3 overflows
    every_other = (lambda t: torch.stack([t, t], -1)[..., 0])  # not dense: the scalar strided walk
    scalar = torch.ops.sgg.guide(every_other(c), every_other(u), None, weights)
    assert torch.equal(out.view(torch.int16), scalar.view(torch.int16))
    if dtype == torch.bfloat16:  # c10::BFloat16 drops the NaN's sign and payload (c10::Half keeps the sign)
        assert (out[0, :3].view(torch.int16) == 0x7FC0).all()
    rounded_by_torch = torch.ops.sgg.guide(c.float(), u.float(), None, weights).to(dtype)  # same float32 math
    assert torch.equal(out[0, 3:].view(torch.int16), rounded_by_torch[0, 3:].view(torch.int16))


def test_python_wrappers_accept_floats_and_tensors():
    g = torch.Generator().manual_seed(4)
    x, c, u, w = (make((2, 3, 5), torch.float32, gen=g) for _ in range(4))
    weights = torch.tensor([3.5, 2.0])
    expected = torch.ops.sgg.guided_step(x, c, u, w, weights, torch.tensor([1.0, -0.25]))
    assert torch.equal(sgg_kernels.guided_step(x, c, u, w, weights=(3.5, 2.0), step=(1.0, -0.25)), expected)
    assert torch.equal(sgg_kernels.guided_step(x, c, u, w, weights=weights.double(), step=[1.0, -0.25]), expected)
    assert torch.equal(sgg_kernels.guide(c, u, w, [[3.5, 2.0], [3.5, 2.0]]), torch.ops.sgg.guide(c, u, w, weights))
    y = x.clone()
    assert sgg_kernels.guided_step_(y, c, u, w, (3.5, 2.0), (1.0, -0.25)) is y and torch.equal(y, expected)


def test_non_finite_inputs_propagate_as_ieee_arithmetic():
    c = torch.tensor([[1.0, float("nan"), float("inf"), 2.0]])
    u = torch.tensor([[float("inf"), 0.0, 1.0, 2.0]])
    out = torch.ops.sgg.guide(c, u, None, torch.tensor([0.0, 0.0]))
    expected = sgg_kernels.guide_reference(c, u, None, torch.tensor([0.0, 0.0])).float()
    assert torch.equal(out.isnan(), expected.isnan()) and torch.equal(out.nan_to_num(), expected.nan_to_num())
    assert out[0, 0].isnan()  # 0 * (1 - inf) is NaN: a zero weight does not mask a non-finite input
