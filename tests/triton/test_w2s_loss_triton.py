"""The Triton launchers of sgg.w2s_loss against the float64 reference, under TRITON_INTERPRET=1 on CPU tensors.

Run in its own process (the variable must be set before triton is imported):
    TRITON_INTERPRET=1 PYTHONPATH=$PWD python -m pytest -q tests/triton
"""
import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton tests run under TRITON_INTERPRET=1 in their own pytest process", allow_module_level=True)
pytest.importorskip("triton")

import torch  # noqa: E402

from sgg_kernels.reference import w2s_loss_grads_reference, w2s_loss_reference  # noqa: E402
from sgg_kernels.w2s_loss import launchers  # noqa: E402

ACC_TOL = {torch.float32: dict(rtol=2e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def operands(dtype, shape, per_sample, seed=0):
    g = torch.Generator().manual_seed(seed)
    v, u, weak, mid = (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(4))
    coefs = torch.rand((shape[0], 3) if per_sample else (3,), generator=g)
    return v, u, weak, mid, coefs


def run_triton(v, u, weak, mid, coefs, grad):
    forward, backward = launchers("triton")
    loss = torch.empty(v.shape[0], dtype=grad.dtype)
    forward(loss, v, u, weak, mid, coefs)
    grad_v, grad_mid = torch.empty_like(v), torch.empty_like(v) if mid is not None else None
    backward(grad_v, grad_mid, grad, v, u, weak, mid, coefs)
    return loss, grad_v, grad_mid


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("present", [(True, True), (True, False), (False, True), (False, False)])
def test_triton_matches_the_float64_reference(dtype, present):
    # 4100 elements per sample: full blocks (BLOCK = 1024) plus a masked tail, over 3 samples.
    v, u, weak, mid, coefs = operands(dtype, (3, 41, 100), per_sample=present[0])
    weak, mid = (weak if present[0] else None), (mid if present[1] else None)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    grad = torch.rand(v.shape[0], dtype=acc)
    loss, grad_v, grad_mid = run_triton(v, u, weak, mid, coefs, grad)

    torch.testing.assert_close(loss.double(), w2s_loss_reference(v, u, weak, mid, coefs), **ACC_TOL[acc])
    want_v, want_mid = w2s_loss_grads_reference(grad, v, u, weak, mid, coefs)
    # The interpreter truncates float32 -> bfloat16 where the GPU rounds to nearest: allow one bf16 ulp.
    out_tol = ACC_TOL.get(dtype, dict(rtol=2 ** -7, atol=1e-6) if dtype == torch.bfloat16 else {})
    torch.testing.assert_close(grad_v, want_v.to(dtype), **out_tol)
    if mid is not None:
        torch.testing.assert_close(grad_mid, want_mid.to(dtype), **out_tol)


def test_triton_is_deterministic_and_handles_empty_samples():
    v, u, weak, mid, coefs = operands(torch.float32, (2, 9000), per_sample=True)
    grad = torch.ones(2)
    first, second = run_triton(v, u, weak, mid, coefs, grad), run_triton(v, u, weak, mid, coefs, grad)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    empty = torch.empty(2, 0)
    loss, _, _ = run_triton(empty, empty, None, None, torch.zeros(3), grad)
    assert torch.isnan(loss).all()  # the mean of nothing, as torch's mean gives


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [True, False])
def test_triton_gradients_equal_the_cpu_kernel_bit_for_bit(dtype, per_sample):
    # Neither fuses multiply-adds (enable_fp_fusion=False, -ffp-contract=off), and both take the
    # reference's order, so every rounding is the same; the loss differs only in summation order.
    # 48 samples, so many per-sample scales: grad * (2 / n) and (grad * 2) / n differ for about 1 grad in 15.
    v, u, weak, mid, coefs = operands(dtype, (48, 41, 10), per_sample)
    grad = torch.rand(48, dtype=dtype, generator=torch.Generator().manual_seed(0))
    grad_v, grad_mid = torch.empty_like(v), torch.empty_like(v)
    launchers("cpu")[1](grad_v, grad_mid, grad, v, u, weak, mid, coefs)
    _, triton_v, triton_mid = run_triton(v, u, weak, mid, coefs, grad)
    assert torch.equal(triton_v, grad_v) and torch.equal(triton_mid, grad_mid)
