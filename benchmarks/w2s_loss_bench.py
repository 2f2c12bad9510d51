"""Peak extra memory and median time of one forward+backward of the W2S loss: the fused op against the
eager formulation, on CPU (the device of the tensors; pass --device cuda on a GPU machine).

    PYTHONPATH=$PWD python benchmarks/w2s_loss_bench.py [--shape 32 4 32 32] [--dtype float32]

A TorchDispatchMode records every tensor that an op returns, and when its TensorImpl dies (torch
keeps a tensor's Python object alive as long as the C++ tensor lives). Memory that an op allocates
and frees internally is not seen: for the fused CPU op that is the partial-sum table, B * ceil(n / 4096)
doubles (1/512 of a float32 v). Inputs are excluded; the gradients left in .grad are excluded too,
so the figure is the scratch memory the loss needs beyond its inputs and its outputs.
"""
from __future__ import annotations

import argparse
import weakref

from torch.utils import benchmark

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import sgg_kernels  # noqa: F401

from sgg_kernels.bench.cases import eager_w2s_loss as eager


class AllocationTimeline(TorchDispatchMode):
    """Records (+bytes, key) when an op returns a tensor on new storage and (-bytes, key) when the last tensor on it dies."""

    def __init__(self, existing: list):
        super().__init__()
        self.ignored = {t.untyped_storage().data_ptr() for t in existing}
        self.refs: dict = {}
        self.events: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes():
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.ignored:
            return
        if key not in self.refs:
            self.refs[key] = 0
            self.events.append((storage.nbytes(), key))
        self.refs[key] += 1
        weakref.finalize(t, self._release, key, storage.nbytes())

    def _release(self, key: int, nbytes: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.events.append((-nbytes, key))

    def peak_excluding(self, keys: set) -> int:
        current = peak = 0
        for delta, key in self.events:
            if key not in keys:
                current += delta
                peak = max(peak, current)
        return peak


def peak_extra_bytes(loss_fn, v, u, weak, mid, coefs) -> int:
    v, mid = (x.detach().clone().requires_grad_(True) for x in (v, mid))
    timeline = AllocationTimeline([v, u, weak, mid, coefs])
    with timeline:
        loss_fn(v, u, weak, mid, coefs).mean().backward()
    grads = {v.grad.untyped_storage().data_ptr(), mid.grad.untyped_storage().data_ptr()}
    return timeline.peak_excluding(grads)


def median_seconds(loss_fn, v, u, weak, mid, coefs) -> float:
    v, mid = (x.detach().clone().requires_grad_(True) for x in (v, mid))
    timer = benchmark.Timer("loss_fn(v, u, weak, mid, coefs).mean().backward()",
                            globals=dict(loss_fn=loss_fn, v=v, u=u, weak=weak, mid=mid, coefs=coefs))
    return timer.blocked_autorange(min_run_time=1.0).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 4, 32, 32], help="v's shape (SiT-B/2 latents)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    v, u, weak, mid = (torch.randn(args.shape, dtype=dtype, device=args.device) for _ in range(4))
    t = torch.rand(args.shape[0], device=args.device)
    coefs = sgg_kernels.W2SLoss("segmented").coefficients(t, args.shape[0], v.device)
    v_bytes = v.numel() * v.element_size()
    print(f"segmented W2S loss, v {list(v.shape)} {args.dtype} on {args.device} ({v_bytes / 2**20:.2f} MiB), "
          f"forward+backward, {torch.get_num_threads()} threads: peak memory beyond inputs and gradients; median time")
    times = {}
    for name, fn in (("fused sgg.w2s_loss", torch.ops.sgg.w2s_loss), ("eager PyTorch", eager)):
        peak = peak_extra_bytes(fn, v, u, weak, mid, coefs)
        times[name] = median_seconds(fn, v, u, weak, mid, coefs)
        print(f"  {name:20s} {peak / 2**10:10.1f} KiB = {peak / v_bytes:6.3f} x size of v; {times[name] * 1e3:8.3f} ms")
    print(f"  eager / fused time: {times['eager PyTorch'] / times['fused sgg.w2s_loss']:.2f}")


if __name__ == "__main__":
    main()
