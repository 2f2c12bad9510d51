"""sgg.w2s_loss and W2SLoss against a plain-PyTorch transcription of the reference SiT losses.

The transcription below is written the way the reference training code writes each variant (one
torch expression per variant, .detach() for stop-gradient), independently of sgg_kernels.reference.
"""

import pytest
import torch
import torch.nn.functional as F

import sgg_kernels  # noqa: F401
from sgg_kernels.reference import w2s_loss_grads_reference, w2s_loss_reference
from sgg_kernels.training import OPERANDS, W2SLoss
from sgg_kernels.w2s_loss import launchers
from helpers import available_capabilities, simd_build

# lam and rho exact in float32 (coefs are float32 by contract), so float64 results compare at 1e-10.
LAM, RHO, LOW, HIGH = 0.75, 0.25, 0.2, 0.8
VARIANTS = list(OPERANDS)
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=1e-6)}


def mse(a, b):
    return ((a - b) ** 2).flatten(1).mean(1)


def transcription(variant, v, u, t, weak, mid, lam=LAM, rho=RHO):
    plain = mse(v, u)
    if variant == "none":
        return plain
    if variant in ("uncond", "layerskip", "separate"):
        return mse(v, u + lam * (v - weak).detach())
    if variant == "branch":
        return mse(v, u + lam * (v - mid).detach()) + rho * mse(mid, u)
    guided = mse(v, u + lam * (v - weak).detach())
    below = plain + rho * mse(v, mid)
    return torch.where((t >= LOW) & (t <= HIGH), guided, torch.where(t < LOW, below, plain))


def random_batch(dtype, shape=(6, 3, 5, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    v, u, weak, mid = (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(4))
    t = torch.rand(shape[0], generator=g, dtype=torch.float64)
    t[:2] = torch.tensor([LOW, HIGH], dtype=torch.float64)  # both segment boundaries belong to the guided segment
    return v, u, weak, mid, t


def leaves(*tensors):
    return [x.detach().clone().requires_grad_(True) for x in tensors]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_matches_the_transcription(variant, dtype):
    v, u, weak, mid, t = random_batch(dtype)
    kwargs = {name: value for name, value in (("weak", weak), ("mid", mid)) if name in OPERANDS[variant]}
    upstream = torch.rand(v.shape[0], dtype=torch.float64)

    v1, mid1 = leaves(v, mid)
    kwargs1 = {**kwargs, **({"mid": mid1} if "mid" in kwargs else {})}
    loss = W2SLoss(variant, w_scale=LAM, weak_loss_ratio=RHO, reduction="none")(v1, u, t.to(dtype), **kwargs1)
    (loss.double() * upstream).sum().backward()

    v2, mid2 = leaves(v.double(), mid.double())
    expected = transcription(variant, v2, u.double(), t, weak.double(), mid2)
    (expected * upstream).sum().backward()

    assert loss.dtype == dtype
    torch.testing.assert_close(loss.double(), expected.detach(), **TOL[dtype])
    torch.testing.assert_close(v1.grad.double(), v2.grad, **TOL[dtype])
    if "mid" in kwargs:
        torch.testing.assert_close(mid1.grad.double(), mid2.grad, **TOL[dtype])


def test_mean_reduction_of_the_plain_variant_is_mse_loss():
    v, u, *_ = random_batch(torch.float32)
    torch.testing.assert_close(W2SLoss("none")(v, u), F.mse_loss(v, u))


def op_args(dtype, per_sample=True, shape=(5, 4, 33), seed=1):
    v, u, weak, mid, _ = random_batch(dtype, shape, seed)
    coefs = torch.rand((shape[0], 3) if per_sample else (3,), generator=torch.Generator().manual_seed(seed))
    return v, u, weak, mid, coefs


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("present", [(True, True), (True, False), (False, True), (False, False)])
def test_launchers_match_the_float64_reference(backend, dtype, present):
    v, u, weak, mid, coefs = op_args(dtype, per_sample=present[0])
    weak, mid = (weak if present[0] else None), (mid if present[1] else None)
    forward, backward = launchers(backend)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    loss = torch.empty(v.shape[0], dtype=acc)
    forward(loss, v, u, weak, mid, coefs)
    grad = torch.rand(v.shape[0], dtype=acc)
    grad_v, grad_mid = torch.empty_like(v), torch.empty_like(v) if mid is not None else None
    backward(grad_v, grad_mid, grad, v, u, weak, mid, coefs)

    tol = TOL[acc]
    torch.testing.assert_close(loss.double(), w2s_loss_reference(v, u, weak, mid, coefs), **tol)
    want_v, want_mid = w2s_loss_grads_reference(grad, v, u, weak, mid, coefs)
    out_tol = tol if dtype in TOL else {}  # half and bfloat16 gradients: one rounding to the output dtype
    torch.testing.assert_close(grad_v, want_v.to(dtype), **out_tol)
    if mid is not None:
        torch.testing.assert_close(grad_mid, want_mid.to(dtype), **out_tol)


def test_closed_form_gradients_equal_autograd_through_the_reference():
    v, u, weak, mid, coefs = op_args(torch.float64)
    v1, mid1 = leaves(v, mid)
    grad = torch.rand(v.shape[0], dtype=torch.float64)
    (w2s_loss_reference(v1, u, weak, mid1, coefs) * grad).sum().backward()
    want_v, want_mid = w2s_loss_grads_reference(grad, v, u, weak, mid, coefs)
    torch.testing.assert_close(v1.grad, want_v)
    torch.testing.assert_close(mid1.grad, want_mid)


def test_strided_inputs_multi_chunk_samples_and_determinism():
    # 3 samples of 2*4100 elements: several 4096-element chunks per sample, and transposed operands.
    v, u, weak, mid, coefs = op_args(torch.float32, shape=(3, 4100, 2), seed=2)
    v, u, weak, mid = (x.transpose(1, 2) for x in (v, u, weak, mid))
    first = torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs)
    torch.testing.assert_close(first.double(), w2s_loss_reference(v, u, weak, mid, coefs), **TOL[torch.float32])
    assert torch.equal(first, torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs))


def test_cpu_loss_does_not_depend_on_the_thread_count():
    v, u, weak, mid, coefs = op_args(torch.float32, shape=(2, 50000), seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs)
        torch.set_num_threads(max(2, threads))
        assert torch.equal(one, torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_each_simd_build_matches_the_reference_at_any_thread_count(capability, dtype):
    threads = torch.get_num_threads()
    with simd_build(capability):
        try:
            v, u, weak, mid, coefs = op_args(dtype, shape=(3, 9000 + 7), seed=4)  # chunks, a vector body and a tail
            grad = torch.rand(3, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
            torch.set_num_threads(1)
            loss = torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs)
            grads = torch.ops.sgg.w2s_loss_backward(grad, v, u, weak, mid, coefs)
            tol = TOL.get(dtype, dict(rtol=2e-2, atol=1e-2))
            torch.testing.assert_close(loss.double(), w2s_loss_reference(v, u, weak, mid, coefs), **TOL[torch.float32]
                                       if dtype != torch.float64 else TOL[dtype])
            for got, want in zip(grads, w2s_loss_grads_reference(grad, v, u, weak, mid, coefs)):
                torch.testing.assert_close(got.double(), want, **tol)
            torch.set_num_threads(max(2, threads))
            assert torch.equal(loss, torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs))
            assert all(map(torch.equal, grads, torch.ops.sgg.w2s_loss_backward(grad, v, u, weak, mid, coefs)))
        finally:
            torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_simd_build_gives_the_same_bits(dtype):
    # One logical vector width (64 bytes) in every build, so even the lane order of the sums agrees.
    v, u, weak, mid, coefs = op_args(dtype, shape=(3, 9000 + 7), seed=5)
    grad = torch.rand(3, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    results = []
    for name in available_capabilities():
        with simd_build(name):
            results.append((torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs),
                            *torch.ops.sgg.w2s_loss_backward(grad, v, u, weak, mid, coefs)))
    for other in results[1:]:
        assert all(map(torch.equal, results[0], other))


def test_empty_batch_gives_empty_losses():
    v = torch.empty(0, 3)
    assert torch.ops.sgg.w2s_loss(v, v, None, v, torch.zeros(3)).shape == (0,)


def test_gradcheck_float64():
    v, u, weak, mid, coefs = op_args(torch.float64, shape=(3, 2, 5))
    # gradcheck perturbs v, so the stop-gradient operand sg(v - weak) must stay fixed under that
    # perturbation for finite differences to see what the objective differentiates: weak = v - d.
    offset = v - weak
    v, mid = leaves(v, mid)
    assert torch.autograd.gradcheck(
        lambda a, m: torch.ops.sgg.w2s_loss(a, u, a.detach() - offset, m, coefs), (v, mid))


@pytest.mark.parametrize("present", [(True, True), (False, False)])
def test_opcheck(present):
    v, u, weak, mid, coefs = op_args(torch.float32, shape=(3, 2, 5))
    weak, mid = (weak if present[0] else None), (mid if present[1] else None)
    v = v.requires_grad_(True)
    mid = mid.requires_grad_(True) if mid is not None else None
    torch.library.opcheck(torch.ops.sgg.w2s_loss.default, (v, u, weak, mid, coefs))
    grad = torch.rand(3)
    mid = mid.detach() if mid is not None else None
    torch.library.opcheck(torch.ops.sgg.w2s_loss_backward.default, (grad, v.detach(), u, weak, mid, coefs))


def test_double_backward_raises():
    v, u, weak, mid, coefs = op_args(torch.float64, shape=(2, 3))
    v = v.requires_grad_(True)
    (grad_v,) = torch.autograd.grad(torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs).sum(), v, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad_v.sum().backward()


def test_autocast_with_bfloat16_predictions():
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 16)
    x, u, t = torch.randn(8, 16), torch.randn(8, 16), torch.rand(8)
    loss_fn = W2SLoss("segmented", w_scale=LAM, weak_loss_ratio=RHO)
    grads = []
    for fused in (True, False):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v = model(x)
            with torch.no_grad():
                weak = model(x * 0.5)
            mid = model(x.flip(0))
            assert v.dtype == torch.bfloat16
            loss = loss_fn(v, u, t, weak=weak, mid=mid) if fused else \
                transcription("segmented", v.float(), u, t, weak.float(), mid.float()).mean()
        assert loss.dtype == torch.float32
        loss.backward()
        grads.append((loss.detach(), model.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize("call, message", [
    (lambda a: torch.ops.sgg.w2s_loss(a, a[:, :1], None, None, torch.zeros(3)), "u has shape"),
    (lambda a: torch.ops.sgg.w2s_loss(a, a, a.double(), None, torch.zeros(3)), "weak has dtype"),
    (lambda a: torch.ops.sgg.w2s_loss(a, a, None, None, torch.zeros(4, 3)), "coefs must have shape"),
    (lambda a: torch.ops.sgg.w2s_loss(a, a, None, None, torch.zeros(3, dtype=torch.float64)), "coefs must be float32"),
    (lambda a: torch.ops.sgg.w2s_loss(a.int(), a.int(), None, None, torch.zeros(3)), "v has dtype"),
    (lambda a: W2SLoss("uncond")(a, a), "needs the `weak` prediction"),
    (lambda a: W2SLoss("none")(a, a, mid=a), "does not use the `mid` prediction"),
    (lambda a: W2SLoss("separate")(a, a[:1], weak=a), "target has shape"),
    (lambda a: W2SLoss("separate")(a, a, weak=a.double()), "weak has dtype torch.float64 but pred has"),
    (lambda a: W2SLoss("segmented")(a, a, torch.rand(2), weak=a, mid=a), "t must be a floating tensor of shape [3]"),
    (lambda a: W2SLoss("uncond")(a, a, weak=a, progress=1.5), "progress must be"),
    (lambda a: W2SLoss("cfg"), "weak_type must be one of"),
    (lambda a: W2SLoss(w_scale=-1), "w_scale must be"),
    (lambda a: W2SLoss(guidance_low=0.9, guidance_high=0.1), "guidance_low (0.9) must not exceed"),
    (lambda a: W2SLoss(reduction="max"), "reduction must be"),
])
def test_bad_input_names_the_problem(call, message):
    # W2SLoss's own checks raise ValueError or TypeError; the op's (compiled) checks RuntimeError.
    with pytest.raises((ValueError, TypeError, RuntimeError)) as err:
        call(torch.randn(3, 4))
    assert message in str(err.value)


def test_ramp_strength_and_segment_coefficients():
    loss_fn = W2SLoss("segmented", w_scale=0.5, weak_loss_ratio=0.3, weak_alpha=2.0)
    assert loss_fn.strength(0.5) == pytest.approx(0.125)
    coefs = loss_fn.coefficients(torch.tensor([0.1, 0.2, 0.5, 0.8, 0.9]), 5, torch.device("cpu"), progress=0.5)
    expected = [[0, 0.3, 0], [0.125, 0, 0], [0.125, 0, 0], [0.125, 0, 0], [0, 0, 0]]
    torch.testing.assert_close(coefs, torch.tensor(expected))


def test_fused_forward_backward_needs_at_most_one_v_of_scratch_memory():
    from benchmarks.w2s_loss_bench import eager, peak_extra_bytes
    v, u, weak, mid, coefs = op_args(torch.float32, shape=(4, 3, 1000))
    v_bytes = v.numel() * v.element_size()
    assert peak_extra_bytes(torch.ops.sgg.w2s_loss, v, u, weak, mid, coefs) <= v_bytes
    assert peak_extra_bytes(eager, v, u, weak, mid, coefs) > v_bytes  # the tracker does see allocations


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cuda_backends_match_the_reference(backend, dtype):
    v, u, weak, mid, coefs = (x.cuda() for x in op_args(dtype, shape=(4, 16, 64, 64)))
    v, mid = leaves(v, mid)
    grad = torch.rand(4, device="cuda")
    with sgg_kernels.use_backend(backend):
        loss = torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs)
        (loss * grad).sum().backward()
        assert torch.equal(loss, torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs))  # deterministic
    torch.testing.assert_close(loss.double(), w2s_loss_reference(v, u, weak, mid, coefs), **TOL[torch.float32])
    want_v, want_mid = w2s_loss_grads_reference(grad, v, u, weak, mid, coefs)
    out_tol = TOL[torch.float32] if dtype == torch.float32 else {}
    torch.testing.assert_close(v.grad, want_v.to(dtype), **out_tol)
    torch.testing.assert_close(mid.grad, want_mid.to(dtype), **out_tol)


@pytest.mark.gpu
def test_cuda_triton_forward_backward_allocates_at_most_one_v_beyond_the_gradients():
    v, u, weak, mid, coefs = (x.cuda() for x in op_args(torch.float32, shape=(4, 16, 128, 128)))
    v, mid = leaves(v, mid)
    v_bytes = v.numel() * v.element_size()
    with sgg_kernels.use_backend("triton"):
        torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs).sum().backward()  # compiles the kernels first
        v.grad = mid.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs).sum().backward()
        torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before <= 3 * v_bytes  # grad_v + grad_mid + at most one v
