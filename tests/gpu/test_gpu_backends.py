"""The sgg ops on a CUDA device, for both GPU backends, against the float64 reference.

Skipped without a GPU (tests/conftest.py); `make gpu-check` runs them.
"""
import pytest
import torch

from guidance_cases import DTYPES, OPERANDS, SHAPES, assert_matches_reference, make_coefficients, make_operands
from sgg_kernels import backends, use_backend

pytestmark = pytest.mark.gpu
LAYOUTS = ["contiguous", "chunk", "transpose", "slice", "mixed"]


@pytest.fixture(params=["cuda", "triton"])
def backend(request):
    with use_backend(request.param):
        yield request.param


def ops(x, cond, uncond, weak, weights, step):
    """(guide, guided_step, guided_step_ on a copy of x) through the dispatcher."""
    x_in_place = x.clone()
    torch.ops.sgg.guided_step_(x_in_place, cond, uncond, weak, weights, step)
    return (torch.ops.sgg.guide(cond, uncond, weak, weights),
            torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step), x_in_place)


def check_ops(x, cond, uncond, weak, weights, step):
    guide, stepped, in_place = ops(x, cond, uncond, weak, weights, step)
    assert_matches_reference(guide, None, cond, uncond, weak, weights, None)
    assert_matches_reference(stepped, x, cond, uncond, weak, weights, step)
    assert torch.equal(in_place, stepped)


@pytest.mark.parametrize("shape", SHAPES + [(2, 16, 128, 128), (1, 16, 5, 90, 160)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ops_match_reference(backend, shape, dtype):
    x, cond, uncond, weak = make_operands(shape, dtype, "cuda")
    check_ops(x, cond, uncond, weak, *make_coefficients(shape[0], True, "cuda"))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("operands", OPERANDS, ids=lambda o: f"uncond{int(o[0])}-weak{int(o[1])}")
@pytest.mark.parametrize("per_sample", [True, False], ids=["per-sample", "shared"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_views_operands_and_in_place(backend, layout, operands, per_sample, dtype):
    x, cond, uncond, weak = make_operands((3, 4, 33, 17), dtype, "cuda", layout)
    uncond, weak = (uncond if operands[0] else None), (weak if operands[1] else None)
    check_ops(x, cond, uncond, weak, *make_coefficients(3, per_sample, "cuda"))


def test_in_place_into_a_strided_view_leaves_the_rest_of_its_storage(backend):
    base = torch.randn(2, 4, 64, 30, device="cuda", dtype=torch.bfloat16)
    x = base[:, 1:3, :, ::3]
    _, cond, uncond, weak = make_operands(tuple(x.shape), torch.bfloat16, "cuda", "transpose")
    weights, step = make_coefficients(2, True, "cuda")
    x_before, base_before = x.clone(), base.clone()
    torch.ops.sgg.guided_step_(x, cond, uncond, weak, weights, step)
    assert_matches_reference(x, x_before, cond, uncond, weak, weights, step)
    base_before[:, 1:3, :, ::3] = x
    assert torch.equal(base, base_before)


@pytest.mark.parametrize("offset", [1, 3, 8])
@pytest.mark.parametrize("mutually_misaligned", [False, True])
def test_unaligned_operands(backend, offset, mutually_misaligned):
    # Samples of 1001 halves starting mid-vector: the CUDA kernel's scalar head and tail when all
    # operands share the misalignment, its flat fallback when they do not.
    def operand(i):
        start = offset + (i if mutually_misaligned else 0)
        return torch.randn(2 * 1001 + 16, device="cuda", dtype=torch.float16)[start:start + 2 * 1001].view(2, -1)

    x, cond, uncond, weak = (operand(i) for i in range(4))
    check_ops(x, cond, uncond, weak, *make_coefficients(2, True, "cuda"))


def test_launchers_are_callable_directly(backend):
    x, cond, uncond, weak = make_operands((2, 3, 40, 40), torch.bfloat16, "cuda", "mixed")
    weights, step = make_coefficients(2, True, "cuda")
    out = torch.empty_like(x)
    backends.launcher(backend)(out, x, cond, uncond, weak, weights, step)
    assert_matches_reference(out, x, cond, uncond, weak, weights, step)


def test_results_are_bitwise_deterministic(backend):
    x, cond, uncond, weak = make_operands((4, 16, 64, 64), torch.bfloat16, "cuda")
    weights, step = make_coefficients(4, True, "cuda")
    first = torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step)
    for _ in range(3):
        assert torch.equal(torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step), first)


def test_cuda_graph_replays_with_new_weights(backend):
    x, cond, uncond, weak = make_operands((2, 16, 64, 64), torch.bfloat16, "cuda")
    weights, step = make_coefficients(2, True, "cuda")
    x_start = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside capture (Triton compiles on first launch)
        torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step)
        torch.ops.sgg.guided_step_(x, cond, uncond, weak, weights, step)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        guide = torch.ops.sgg.guide(cond, uncond, weak, weights)
        torch.ops.sgg.guided_step_(x, cond, uncond, weak, weights, step)
    for seed in (5, 6):
        new_weights, new_step = make_coefficients(2, True, "cuda", seed=seed)
        weights.copy_(new_weights)
        step.copy_(new_step)
        x.copy_(x_start)
        graph.replay()
        torch.cuda.synchronize()
        assert_matches_reference(guide, None, cond, uncond, weak, new_weights, None)
        assert_matches_reference(x, x_start, cond, uncond, weak, new_weights, new_step)


def test_torch_compile_fullgraph_without_recompiling_for_new_values(backend):
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def sampler_step(x, cond, uncond, weak, weights, step):
        x = torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step)
        torch.ops.sgg.guided_step_(x, cond, uncond, weak, weights, step)
        return x

    x, cond, uncond, weak = make_operands((2, 16, 32, 32), torch.bfloat16, "cuda")
    for seed in (1, 2):  # new weight values must not recompile (they are tensors, not constants)
        weights, step = make_coefficients(2, True, "cuda", seed=seed)
        with torch._dynamo.config.patch(error_on_recompile=seed > 1):
            got = sampler_step(x, cond, uncond, weak, weights, step)
        once = torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step)
        assert torch.equal(got, torch.ops.sgg.guided_step(once, cond, uncond, weak, weights, step))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_opcheck(backend, dtype):
    x, cond, uncond, weak = make_operands((2, 3, 8, 8), dtype, "cuda", "mixed")
    weights, step = make_coefficients(2, True, "cuda")
    torch.library.opcheck(torch.ops.sgg.guide.default, (cond, uncond, weak, weights))
    torch.library.opcheck(torch.ops.sgg.guided_step.default, (x, cond, None, weak, weights, step))
    torch.library.opcheck(torch.ops.sgg.guided_step_.default, (x.clone(), cond, uncond, None, weights, step))


def test_64_bit_indexing(backend):
    # More than 2**31 elements (4 GiB per bf16 operand): offsets past INT32_MAX must be right.
    numel = 2**31 + 4096 + 3
    if torch.cuda.get_device_properties(0).total_memory < 6 * numel * 2:
        pytest.skip("needs about 26 GB of device memory")
    cond = torch.randn(1, numel, device="cuda", dtype=torch.bfloat16)
    uncond = torch.randn_like(cond)
    weights = torch.tensor([1.5, 0.0], device="cuda")
    out = torch.ops.sgg.guide(cond, uncond, None, weights)
    for part in (slice(0, 4096), slice(2**31 - 5, 2**31 + 5), slice(numel - 4096, numel)):
        assert_matches_reference(out[:, part], None, cond[:, part], uncond[:, part], None, weights, None)
    del cond, uncond, out
    torch.cuda.empty_cache()
