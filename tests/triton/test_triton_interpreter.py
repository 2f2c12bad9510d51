"""The Triton launcher (sgg_kernels.triton_kernels.launch_triton) against the float64 reference,
under TRITON_INTERPRET=1 on CPU tensors (see conftest.py). The registered ops route CPU tensors to
the C++ kernels, so the launcher is called directly. The interpreter truncates float32 -> bfloat16,
so bfloat16 may be off by one ulp (the GPU rounds to nearest)."""
import pytest
import torch

from guidance_cases import DTYPES, OPERANDS, SHAPES, assert_matches_reference, make_coefficients, make_operands
from sgg_kernels.triton_kernels import launch_triton

LAYOUTS = ["contiguous", "chunk", "transpose", "slice", "mixed"]


def run(x, cond, uncond, weak, weights, step, out=None):
    out = torch.empty_like(cond if x is None else x) if out is None else out
    launch_triton(out, x, cond, uncond, weak, weights, step)
    return out


def check(out, x, cond, uncond, weak, weights, step):
    assert_matches_reference(out, x, cond, uncond, weak, weights, step, bf16_ulps=1)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_guided_step_shapes(shape, dtype):
    x, cond, uncond, weak = make_operands(shape, dtype, "cpu")
    weights, step = make_coefficients(shape[0], True, "cpu")
    check(run(x, cond, uncond, weak, weights, step), x, cond, uncond, weak, weights, step)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("operands", OPERANDS, ids=lambda o: f"uncond{int(o[0])}-weak{int(o[1])}")
@pytest.mark.parametrize("per_sample", [True, False], ids=["per-sample", "shared"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_guide_and_step_layouts_and_operands(layout, operands, per_sample, dtype):
    x, cond, uncond, weak = make_operands((3, 4, 6, 5), dtype, "cpu", layout)
    uncond, weak = (uncond if operands[0] else None), (weak if operands[1] else None)
    weights, step = make_coefficients(3, per_sample, "cpu")
    check(run(None, cond, uncond, weak, weights, None), None, cond, uncond, weak, weights, None)
    check(run(x, cond, uncond, weak, weights, step), x, cond, uncond, weak, weights, step)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_in_place_step_writes_only_x(layout, dtype):
    x, cond, uncond, weak = make_operands((2, 3, 8, 9), dtype, "cpu", layout)
    weights, step = make_coefficients(2, True, "cpu")
    x_before, inputs_before = x.clone(), [t.clone() for t in (cond, uncond, weak)]
    run(x, cond, uncond, weak, weights, step, out=x)
    check(x, x_before, cond, uncond, weak, weights, step)
    for t, before in zip((cond, uncond, weak), inputs_before):
        assert torch.equal(t, before)


def test_in_place_into_a_strided_view_leaves_the_rest_of_its_storage():
    base = torch.randn(2, 4, 6, 10)
    x = base[:, 1:3, :, ::3]  # strided in every inner dim
    _, cond, uncond, weak = make_operands(tuple(x.shape), torch.float32, "cpu", "transpose")
    weights, step = make_coefficients(2, True, "cpu")
    x_before, base_before = x.clone(), base.clone()
    run(x, cond, uncond, weak, weights, step, out=x)
    check(x, x_before, cond, uncond, weak, weights, step)
    untouched = torch.ones_like(base, dtype=torch.bool)
    untouched[:, 1:3, :, ::3] = False
    assert torch.equal(base[untouched], base_before[untouched])


def test_more_per_sample_dims_than_the_kernel_walks():
    # 6-D with every dim permuted: 5 per-sample dims that cannot be merged -> split launches.
    shape = (2, 3, 2, 3, 2, 3)
    x, cond, uncond, weak = (torch.randn(tuple(reversed(shape))).permute(5, 4, 3, 2, 1, 0) for _ in range(4))
    weights, step = make_coefficients(2, True, "cpu")
    out = torch.empty(shape)
    check(run(x, cond, uncond, weak, weights, step, out=out), x, cond, uncond, weak, weights, step)


def test_misaligned_and_odd_offsets():
    # Operands starting 1 element past an allocation (not 16-byte aligned), odd per-sample size.
    x, cond, uncond, weak = (torch.randn(3 * 37 + 1)[1:].view(3, 37) for _ in range(4))
    weights, step = make_coefficients(3, True, "cpu")
    check(run(x, cond, uncond, weak, weights, step), x, cond, uncond, weak, weights, step)
