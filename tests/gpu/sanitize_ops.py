"""One small call of every sgg op on each GPU backend, for compute-sanitizer (memcheck, racecheck):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \\
        python tests/gpu/sanitize_ops.py          # scripts/gpu_check.sh runs both tools
    python tests/gpu/sanitize_ops.py --device cpu # the same calls on CPU tensors (make test's dry run)

Sizes are odd so that every kernel runs its vector body, its scalar head and tail, and the strided
walk; without the caching allocator each tensor is its own allocation, so an out-of-bounds access
is reported instead of landing in a neighbour. The calls return their results with the operands
they were made from, so tests/test_gpu_scripts_dry_run.py checks them against the float64 reference.
"""
import argparse
import contextlib

import torch

import sgg_kernels
from sgg_kernels import use_backend

GPU_BACKENDS = ("cuda", "triton")


def guidance_calls(device):
    """[(label, out, (x, cond, uncond, weak, weights, step))]: the guidance ops on dense, strided,
    transposed and sliced operands in bf16 and float32, per-sample and shared coefficients."""
    g = torch.Generator(device=device).manual_seed(0)
    calls = []
    for dtype in (torch.bfloat16, torch.float32):
        x, c, u, w = (torch.randn(3, 5, 37, 41, generator=g, device=device, dtype=dtype) for _ in range(4))
        # One row more, then sliced: samples and rows with gaps, so the strided walk runs.
        u_gapped = torch.randn(3, 5, 38, 41, generator=g, device=device, dtype=dtype)[:, :, 1:, :]
        weights = torch.rand(3, 2, generator=g, device=device)
        step = torch.rand(2, generator=g, device=device)
        calls.append((f"guide dense {dtype}", torch.ops.sgg.guide(c, u, w, weights), (None, c, u, w, weights, None)))
        gapped = torch.ops.sgg.guided_step(x, c, u_gapped, None, weights, step)
        calls.append((f"guided_step gapped uncond {dtype}", gapped, (x, c, u_gapped, None, weights, step)))
        xt, ct, wt = x.transpose(2, 3), c.transpose(2, 3), w.transpose(2, 3)
        calls.append((f"guided_step transposed {dtype}", torch.ops.sgg.guided_step(xt, ct, None, wt, weights, step),
                      (xt, ct, None, wt, weights, step)))
        written = x.clone()  # x itself stays the operand of the calls above
        torch.ops.sgg.guided_step_(written[1:], c[1:], u[1:], w[1:], weights[1:], step)
        calls.append((f"guided_step_ sliced batch {dtype}", written[1:],
                      (x[1:], c[1:], u[1:], w[1:], weights[1:], step)))
    return calls


def loss_calls(device):
    """(losses, grad_v, grad_mid, (v, u, weak, mid, coefs)): w2s_loss forward and backward."""
    g = torch.Generator(device=device).manual_seed(1)
    v = torch.randn(3, 4, 33, 17, generator=g, device=device, requires_grad=True)
    mid = torch.randn(3, 4, 33, 17, generator=g, device=device, requires_grad=True)
    u, weak = (torch.randn(3, 4, 33, 17, generator=g, device=device) for _ in range(2))
    coefs = torch.rand(3, 3, generator=g, device=device)
    losses = torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs)
    losses.sum().backward()
    return losses.detach(), v.grad, mid.grad, (v.detach(), u, weak, mid.detach(), coefs)


def run_all(device):
    """Every call on every GPU backend; on CPU tensors the op runs its CPU kernel whatever the backend,
    so the CPU dry run makes the calls once. Returns {backend: (guidance_calls, loss_calls)}."""
    backends = GPU_BACKENDS if torch.device(device).type == "cuda" else (None,)
    results = {}
    for backend in backends:
        with use_backend(backend) if backend else contextlib.nullcontext():
            results[backend] = (guidance_calls(device), loss_calls(device))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for the dry run")
    device = parser.parse_args().device
    if torch.device(device).type == "cuda":
        assert torch.cuda.is_available(), "needs a CUDA device (or --device cpu)"
    results = run_all(device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    calls = sum(len(guidance) + 1 for guidance, _ in results.values())
    ran_on = ", ".join(f"the {b} backend" if b else "the CPU kernel" for b in results)
    print(f"sanitize_ops: {calls} calls covering every op ran on {device} with {ran_on} "
          f"(sgg_kernels {sgg_kernels.__version__})")
