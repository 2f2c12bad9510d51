"""The sgg ops on a CUDA device, for both GPU backends, against the float64 reference, on the core
tests' shapes, layouts and operands. Skipped without a GPU (tests/conftest.py); `make gpu-check` runs them.
"""
import pytest
import torch

from helpers import DTYPES, LAYOUTS, assert_matches_reference, coefficients, make
import sgg_kernels
from sgg_kernels import backends, use_backend
from test_ops import PRESENCE, SHAPES, operands

pytestmark = pytest.mark.gpu


def to_cuda(t, device="cuda"):
    """t on the device with the same sizes, strides and storage offset (Tensor.to makes views contiguous)."""
    if t is None:
        return None
    storage = t.new_empty(0).set_(t.untyped_storage(), 0, (t.untyped_storage().nbytes() // t.element_size(),))
    return storage.to(device).as_strided(t.shape, t.stride(), t.storage_offset())


def cuda_operands(shape, dtype, layout="contiguous", has_u=True, has_w=True, per_sample_w=True, seed=0):
    return tuple(to_cuda(t) for t in operands(shape, dtype, layout, has_u, has_w, per_sample_w, seed))


@pytest.fixture(params=["cuda", "triton"])
def backend(request):
    with use_backend(request.param):
        yield request.param


def check_ops(x, c, u, w, weights, step):
    """guide, guided_step and guided_step_ through the dispatcher, against the reference."""
    assert_matches_reference(torch.ops.sgg.guide(c, u, w, weights), None, c, u, w, weights, None)
    out = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
    assert_matches_reference(out, x, c, u, w, weights, step)
    x_in_place = x.clone()
    torch.ops.sgg.guided_step_(x_in_place, c, u, w, weights, step)
    assert torch.equal(x_in_place, out)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(2, 16, 128, 128), (1, 16, 5, 90, 160)])
def test_every_op_matches_reference(backend, shape, dtype):
    check_ops(*cuda_operands(shape, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("has_u,has_w", PRESENCE)
@pytest.mark.parametrize("per_sample_w", [True, False])
def test_missing_operands_and_shared_weights(backend, has_u, has_w, per_sample_w, dtype):
    check_ops(*cuda_operands((3, 16, 33, 17), dtype, "contiguous", has_u, has_w, per_sample_w))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(2, 4, 9, 11), (3, 5, 7, 2, 3), (2, 16, 64, 64)])
@pytest.mark.parametrize("per_sample_w", [True, False])
def test_views_and_in_place_into_a_view(backend, shape, dtype, layout, per_sample_w):
    x, c, u, w, weights, step = cuda_operands(shape, dtype, layout, per_sample_w=per_sample_w)
    out = check_ops(x, c, u, w, weights, step)
    dense = torch.ops.sgg.guided_step(*(t.contiguous() for t in (x, c, u, w)), weights, step)
    assert torch.equal(out, dense)  # strided and dense kernels apply the same rule in the same order
    x_view = to_cuda(make(shape, dtype, layout, torch.Generator().manual_seed(7)))
    expected = torch.ops.sgg.guided_step(x_view, c, u, w, weights, step)
    torch.ops.sgg.guided_step_(x_view, c, u, w, weights, step)
    assert torch.equal(x_view, expected)


def test_mixed_layouts_and_a_view_written_in_place(backend):
    g = torch.Generator().manual_seed(1)
    shape = (2, 6, 10, 4)
    x, c, u, w = (to_cuda(make(shape, torch.bfloat16, layout, g))
                  for layout in ("channels_last", "transpose", "chunk", "slice"))
    weights, step = to_cuda(coefficients(2, True, g)), to_cuda(coefficients(2, True, g, -1.0, 1.0))
    check_ops(x, c, u, w, weights, step)
    base = torch.randn(2, 6, 10, 12, device="cuda", dtype=torch.bfloat16)
    view, base_before = base[..., ::3], base.clone()
    torch.ops.sgg.guided_step_(view, c, u, w, weights, step)
    assert_matches_reference(view, base_before[..., ::3], c, u, w, weights, step)
    base_before[..., ::3] = view
    assert torch.equal(base, base_before)  # nothing outside the view was written


@pytest.mark.parametrize("offset", [1, 3, 8])
@pytest.mark.parametrize("mutually_misaligned", [False, True])
def test_unaligned_operands(backend, offset, mutually_misaligned):
    # Samples of 1001 halves starting mid-vector: the CUDA kernel's scalar head and tail when all
    # operands share the misalignment, its flat fallback when they do not.
    def operand(i):
        start = offset + (i if mutually_misaligned else 0)
        return torch.randn(2 * 1001 + 16, device="cuda", dtype=torch.float16)[start:start + 2 * 1001].view(2, -1)

    g = torch.Generator().manual_seed(2)
    check_ops(*(operand(i) for i in range(4)), to_cuda(coefficients(2, True, g)),
              to_cuda(coefficients(2, True, g, -1.0, 1.0)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "slice"])
def test_backends_and_cpu_kernel_agree_bit_for_bit(dtype, layout):
    # One rule, one order of operations, no FMA contraction anywhere (setup.py, triton_kernels.py).
    x, c, u, w, weights, step = operands((3, 16, 33, 17), dtype, layout, True, True, True)
    expected = torch.empty_like(x)
    backends.launcher("cpu")(expected, x, c, u, w, weights, step)
    args = tuple(to_cuda(t) for t in (x, c, u, w, weights, step))
    for name in ("cuda", "triton"):
        out = torch.empty_like(args[0])
        backends.launcher(name)(out, *args)  # each launcher called directly
        assert torch.equal(out.cpu(), expected), name


def test_results_are_bitwise_deterministic(backend):
    x, c, u, w, weights, step = cuda_operands((4, 16, 64, 64), torch.bfloat16)
    first = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
    for _ in range(3):
        assert torch.equal(torch.ops.sgg.guided_step(x, c, u, w, weights, step), first)


def test_cuda_graph_replays_with_new_weights(backend):
    x, c, u, w, weights, step = cuda_operands((2, 16, 64, 64), torch.bfloat16)
    x_start = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the capture (Triton compiles on first launch)
        torch.ops.sgg.guide(c, u, w, weights)
        torch.ops.sgg.guided_step_(x, c, u, w, weights, step)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        guide = torch.ops.sgg.guide(c, u, w, weights)
        torch.ops.sgg.guided_step_(x, c, u, w, weights, step)
    g = torch.Generator().manual_seed(5)
    for _ in range(2):
        new_weights, new_step = to_cuda(coefficients(2, True, g)), to_cuda(coefficients(2, True, g, -1.0, 1.0))
        weights.copy_(new_weights)
        step.copy_(new_step)
        x.copy_(x_start)
        graph.replay()
        torch.cuda.synchronize()
        assert_matches_reference(guide, None, c, u, w, new_weights, None)
        assert_matches_reference(x, x_start, c, u, w, new_weights, new_step)


def test_graph_capture_refuses_float_coefficients_by_name(backend):
    # Floats would be a host-to-device copy inside the capture; the wrapper refuses before any copy.
    x, c, u, w, weights, step = cuda_operands((2, 4, 8, 8), torch.float32)
    sgg_kernels.guided_step(x, c, u, w, weights, step)  # compiles outside the capture
    with pytest.raises(RuntimeError, match=r"^weights: floats cannot be copied to cuda:0 during CUDA graph capture"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            sgg_kernels.guided_step(x, c, u, w, (1.5, 0.5), step)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # device tensors are fine
        out = sgg_kernels.guided_step(x, c, u, w, weights, step)
    graph.replay()
    torch.cuda.synchronize()
    assert_matches_reference(out, x, c, u, w, weights, step)

def test_torch_compile_fullgraph_without_recompiling_for_new_values(backend):
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def two_steps(x, c, u, w, weights, step):
        x = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
        torch.ops.sgg.guided_step_(x, c, u, w, weights, step)
        return x

    for seed in (1, 2):  # new weight values must not recompile: they are tensors, not constants
        x, c, u, w, weights, step = cuda_operands((2, 16, 32, 32), torch.bfloat16, seed=seed)
        with torch._dynamo.config.patch(error_on_recompile=seed > 1):
            got = two_steps(x, c, u, w, weights, step)
        once = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
        assert torch.equal(got, torch.ops.sgg.guided_step(once, c, u, w, weights, step))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(backend, dtype):
    x, c, u, w, weights, step = cuda_operands((2, 3, 8, 8), dtype, "slice")
    torch.library.opcheck(torch.ops.sgg.guide.default, (c, u, w, weights))
    torch.library.opcheck(torch.ops.sgg.guided_step.default, (x, c, None, w, weights, step))
    torch.library.opcheck(torch.ops.sgg.guided_step_.default, (x.clone(), c, u, None, weights, step))


def test_64_bit_indexing(backend):
    # More than 2**31 elements (4 GiB per bf16 operand): offsets past INT32_MAX must be right.
    numel = 2**31 + 4096 + 3
    if torch.cuda.get_device_properties(0).total_memory < 8 * numel * 2:
        pytest.skip("needs about 35 GB of device memory")
    cond = torch.randn(1, numel, device="cuda", dtype=torch.bfloat16)
    uncond = torch.randn_like(cond)
    weights = torch.tensor([1.5, 0.0], device="cuda")
    out = torch.ops.sgg.guide(cond, uncond, None, weights)
    for part in (slice(0, 4096), slice(2**31 - 5, 2**31 + 5), slice(numel - 4096, numel)):
        assert_matches_reference(out[:, part], None, cond[:, part], uncond[:, part], None, weights, None)


def test_tensors_on_a_device_other_than_the_current_one(backend):
    """Issue 26 item 1: each backend runs on the operands' device and its stream, not the current one
    (Triton launches on the current device; the CUDA kernels set a guard before handing it the call)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    x, c, u, w, weights, step = (to_cuda(t, "cuda:1") for t in operands((3, 4, 33, 17), torch.float32))
    want = sgg_kernels.guided_step_reference(x, c, u, w, weights, step)
    with torch.cuda.device(0):
        got = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
        loss = torch.ops.sgg.w2s_loss(x, c, u, w, torch.tensor([0.5, 1.0, 0.5], device="cuda:1"))
    torch.cuda.synchronize(1)
    assert got.device == loss.device == torch.device("cuda:1")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
