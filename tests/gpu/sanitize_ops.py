"""One small call of every sgg op on each GPU backend, for compute-sanitizer (memcheck, racecheck):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \\
        python tests/gpu/sanitize_ops.py          # scripts/gpu_check.sh runs both tools

Sizes are odd so that every kernel runs its vector body, its scalar head and tail, and the strided
walk; without the caching allocator each tensor is its own allocation, so an out-of-bounds access
is reported instead of landing in a neighbour.
"""
import torch

import sgg_kernels
from sgg_kernels import use_backend


def guidance_calls(device):
    g = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        x, c, u, w = (torch.randn(3, 5, 37, 41, generator=g, device=device, dtype=dtype) for _ in range(4))
        weights = torch.rand(3, 2, generator=g, device=device)
        step = torch.rand(2, generator=g, device=device)
        torch.ops.sgg.guide(c, u, w, weights)
        torch.ops.sgg.guided_step(x, c, u[:, :, 1:, :].contiguous().as_strided(c.shape, c.stride()), None,
                                  weights, step)
        torch.ops.sgg.guided_step(x.transpose(2, 3), c.transpose(2, 3), None, w.transpose(2, 3), weights, step)
        torch.ops.sgg.guided_step_(x[1:], c[1:], u[1:], w[1:], weights[1:], step)


def loss_calls(device):
    g = torch.Generator(device=device).manual_seed(1)
    v = torch.randn(3, 4, 33, 17, generator=g, device=device, requires_grad=True)
    mid = torch.randn(3, 4, 33, 17, generator=g, device=device, requires_grad=True)
    u, weak = (torch.randn(3, 4, 33, 17, generator=g, device=device) for _ in range(2))
    coefs = torch.rand(3, 3, generator=g, device=device)
    torch.ops.sgg.w2s_loss(v, u, weak, mid, coefs).sum().backward()


if __name__ == "__main__":
    assert torch.cuda.is_available(), "needs a CUDA device"
    for backend in ("cuda", "triton"):
        with use_backend(backend):
            guidance_calls("cuda")
            loss_calls("cuda")
    torch.cuda.synchronize()
    print(f"sanitize_ops: every op ran on both backends (sgg_kernels {sgg_kernels.__version__})")
