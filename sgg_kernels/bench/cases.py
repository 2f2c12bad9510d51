"""What the benchmarks compare: sizes, inputs, and for every op the providers and the baselines
that users run today (the eager diffusers-style chain, its torch.compile, a copy of the same bytes).

Every case is a set of zero-argument callables over the same inputs, so `python -m sgg_kernels.bench`
and the repository's pytest-benchmark suite time them all the same way, in the same run.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from sgg_kernels import backends, use_backend
from sgg_kernels.reference import accumulation_dtype, guided_step_reference, w2s_loss_reference
from sgg_kernels.w2s_loss import launchers as w2s_launchers

# SD3-style settings for one step: CFG scale 4.5 and SLG scale 3.0 both active, Euler dt = -1/28.
# NOISE_SCALE: an Euler-Maruyama step's sqrt(2 t |dt|) at t = 0.5 on that grid.
CFG_SCALE, SLG_SCALE, DT = 4.5, 3.0, -1.0 / 28
NOISE_SCALE = math.sqrt(2 * 0.5 / 28)
# noisy_step_: guided_step_ with the noise operand, the stochastic (SDE) sampler's in-place step.
OPS = ("guide", "guided_step", "guided_step_", "noisy_step_", "w2s_loss")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PRESETS = ("tiny", "default", "full")
MAX_INPUT_SETS = 64
ONE_EAGER_OP = "eager 1 op (c-u)"  # CUDA only; its GB/s column counts the op's bytes, not its own
FUSED = ("sgg cpu", "sgg cuda", "sgg triton")  # the providers that are this package's kernels


def size_for_bytes(megabytes: float, dtype: torch.dtype) -> tuple:
    """A [1, 16, H, H] latent of about `megabytes` MB per operand."""
    side = round(math.sqrt(megabytes * 1e6 / torch.finfo(dtype).bits * 8 / 16))
    return (1, 16, side, side)


class ChunkHalves(tuple):
    """A shape whose cond and uncond are the chunk(2) halves of one [2B, ...] tensor, as a model's
    batched CFG pass returns them; with an odd-sized first half, uncond is not 16-byte aligned.
    (w2s_loss cases take the shape only.)"""


# GPU-only layouts (docs/design.md, "Kernels per backend"): an odd sample size, 7585 elements, which
# the Triton dense path must still move in 16-byte vectors; chunk(2) halves whose second half starts
# 8 bytes off 16-byte alignment in bf16.
GPU_LAYOUT_SIZES = {"odd 3x5x37x41": (3, 5, 37, 41), "chunk(2) halves 1x4x127x127": ChunkHalves((1, 4, 127, 127))}


def sizes(device: str, dtype: torch.dtype, preset: str = "full") -> dict:
    """Label -> shape. full: SD3-1024 latents at B = 1, 2, 4, the video latent, and large operands,
    and on CUDA GPU_LAYOUT_SIZES; default: one SD3-1024 image and the video latent; tiny: one small
    shape (tests and CI)."""
    if preset == "tiny":
        return {"tiny 2x16x8x8": (2, 16, 8, 8)}
    if preset == "default":
        return {"sd3-1024 B=1": (1, 16, 128, 128), "video 21x90x160": (1, 16, 21, 90, 160)}
    out = {f"sd3-1024 B={b}": (b, 16, 128, 128) for b in (1, 2, 4)}
    out["video 21x90x160"] = (1, 16, 21, 90, 160)
    out.update({f"{mb} MB": size_for_bytes(mb, dtype) for mb in ((64, 256) if device == "cuda" else (64,))})
    if device == "cuda":
        out.update(GPU_LAYOUT_SIZES)
    return out


def cache_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.get_device_properties(0).L2_cache_size
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:  # e.g. "107520K"
            text = f.read().strip()
        return int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]]
    except (OSError, ValueError, KeyError):
        return 32 * 2**20


def input_set_count(bytes_per_set: int, device: str) -> int:
    """Enough input sets that one round over them is twice the last-level cache, so no call finds its
    operands in cache from the previous call (the kernels stream; a warm cache would flatter them)."""
    return max(1, min(MAX_INPUT_SETS, math.ceil(2 * cache_bytes(device) / bytes_per_set)))


@dataclass
class Inputs:
    x: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    weak: torch.Tensor
    weights: torch.Tensor  # (lam_cdg, lam_cag) = (CFG_SCALE - 1, SLG_SCALE)
    step: torch.Tensor     # (1, DT), or (1, DT, NOISE_SCALE) with noise
    noise: Optional[torch.Tensor] = None


def make_inputs(shape, dtype, device="cpu", seed=0, noisy=False) -> Inputs:
    g = torch.Generator(device=device).manual_seed(seed)
    x, c, u, w = (torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype) for _ in range(4))
    if isinstance(shape, ChunkHalves):
        c, u = torch.cat([c, u]).chunk(2)
    weights = torch.tensor([CFG_SCALE - 1, SLG_SCALE], device=device)
    if noisy:
        n = torch.randn(x.shape, generator=g, device=device, dtype=torch.float32).to(dtype)
        return Inputs(x, c, u, w, weights, torch.tensor([1.0, DT, NOISE_SCALE], device=device), n)
    return Inputs(x, c, u, w, weights, torch.tensor([1.0, DT], device=device))


def eager_guide(cond, uncond, weak):
    """diffusers' CFG, then the SLG term (the official SGG pipeline's order)."""
    v = uncond + CFG_SCALE * (cond - uncond)
    return v + SLG_SCALE * (cond - weak)


def eager_chain(x, cond, uncond, weak):
    """Guidance, then FlowMatchEulerDiscreteScheduler.step, which upcasts the sample to float32 and casts back."""
    return (x.to(torch.float32) + DT * eager_guide(cond, uncond, weak)).to(x.dtype)


def eager_chain_(x, cond, uncond, weak):
    x.copy_(eager_chain(x, cond, uncond, weak))


def eager_noisy_chain_(x, cond, uncond, weak, noise):
    """An Euler-Maruyama step as samplers write it: guidance, the drift step, then the fresh noise."""
    x.copy_((x.to(torch.float32) + DT * eager_guide(cond, uncond, weak) + NOISE_SCALE * noise).to(x.dtype))


def eager_w2s_loss(v, u, weak, mid, coefs):
    """The W2S objective as plain PyTorch ops, in the accumulation dtype (the reference formula)."""
    return w2s_loss_reference(v, u, weak, mid, coefs, accumulation_dtype(v.dtype))


@dataclass
class Provider:
    fn: Callable[[], object]   # one call on the next input set
    backend: Optional[str] = None  # the sgg GPU backend to select while it runs


@dataclass
class Case:
    op: str
    shape: tuple
    dtype: torch.dtype
    device: str
    bytes_moved: int   # compulsory traffic of one call (reads + writes of full-size operands)
    providers: dict    # name -> Provider
    check: Callable[[str], None]  # raises if a provider's result is wrong (run before timing)


def _drawing(fn, rotation):
    """fn on the next item of the rotation, at each call."""
    return lambda: fn(next(rotation))


def _sharing_rotation(calls: dict, sets: list) -> dict:
    """Providers {name: Provider} from {name: (f(input set), backend)}, all drawing from one rotation
    over the sets, so no call finds its operands in cache from the call before it, whichever provider
    made that call. With a rotation each, the provider timed next in an interleaved round got the
    set the one before had just read: at SD3-1024 B=1 fp32 (5 MB a set, AMD EPYC) torch.compile's
    guided_step_ then took 0.208 ms against sgg cpu's 0.271, which ran after the copy."""
    rotation = itertools.cycle(sets)
    return {name: Provider(_drawing(fn, rotation), backend) for name, (fn, backend) in calls.items()}


def _same_bytes_copy(nbytes: int, device: str) -> Callable:
    """Reads and writes nbytes in total: the bandwidth yardstick for a kernel that moves nbytes. It
    rotates through as many buffers as the kernels' input sets: one pair that stays in cache made the
    copy 84 GB/s at the SD3 size on a 32 MB-L3 EPYC, against 9-17 GB/s from memory.

    The buffers are written once here, as the kernels' inputs are. Left empty, every timed call of the
    first pass over the 64 sets faulted its pages in (on the 2-core Xeon, 9.2 ms per 4 MB call against
    0.29 ms on the next pass; the default run times at most 50 calls, all in that first pass), and the
    source stayed the kernel's shared zero page, read from cache: the yardstick measured page faults."""
    pairs = [[torch.ones(nbytes // 2, dtype=torch.uint8, device=device) for _ in range(2)]
             for _ in range(input_set_count(nbytes, device))]
    return _drawing(lambda pair: pair[1].copy_(pair[0]), itertools.cycle(pairs))


def _sgg_backends(device: str) -> list:
    if device == "cpu":
        return ["cpu", "torch"]
    return [name for name in ("cuda", "triton") if backends._why_unavailable(name) is None] + ["torch"]


def _compiled(fn):
    # Static shapes: the best code compile makes for each size (it recompiles per size, outside the timing).
    return torch.compile(fn, dynamic=False)


def guidance_case(op: str, shape, dtype, device: str) -> Case:
    elem = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    noisy, in_place = op == "noisy_step_", op in ("guided_step_", "noisy_step_")
    # guide: read cond, uncond, weak, write out; steps also read x, a noisy step noise too
    operands = 4 if op == "guide" else 6 if noisy else 5
    sets = [make_inputs(shape, dtype, device, seed, noisy) for seed in range(input_set_count(operands * elem, device))]
    step = op != "guide"
    op_fn = torch.ops.sgg.guided_step_ if noisy else getattr(torch.ops.sgg, op)
    eager = {"guide": eager_guide, "guided_step": eager_chain, "guided_step_": eager_chain_,
             "noisy_step_": eager_noisy_chain_}[op]
    compiled = _compiled(eager)
    tail = (lambda i: (i.noise,)) if noisy else (lambda i: ())

    def fused(i):
        return op_fn(*((i.x,) if step else ()), i.cond, i.uncond, i.weak, i.weights, *((i.step,) if step else ()),
                     *tail(i))

    def torch_launcher(i):  # CPU tensors always run the C++ kernel, so call the torch launcher directly
        out = i.x if in_place else torch.empty_like(i.cond)
        backends.launcher("torch")(out, i.x if step else None, i.cond, i.uncond, i.weak, i.weights,
                                   i.step if step else None, i.noise)
        return out

    def baseline(f):
        return lambda i: f(*((i.x,) if step else ()), i.cond, i.uncond, i.weak, *tail(i))

    calls = {}  # name -> (f(Inputs), sgg backend to select)
    for name in _sgg_backends(device):
        direct = device == "cpu" and name == "torch"
        calls[f"sgg {name}"] = (torch_launcher if direct else fused, None if device == "cpu" else name)
    calls["eager chain"] = (baseline(eager), None)
    calls["torch.compile chain"] = (baseline(compiled), None)
    timed = dict(calls)
    if device == "cuda":  # one elementwise kernel: the latency yardstick of issue 3's small-size goal
        timed[ONE_EAGER_OP] = (lambda i: torch.sub(i.cond, i.uncond), None)
    providers = _sharing_rotation(timed, sets)
    providers["copy (same bytes)"] = Provider(_same_bytes_copy(operands * elem, device))

    @functools.cache  # one float64 reference serves every provider (it took most of a default run's time)
    def exact() -> torch.Tensor:
        i = make_inputs(shape, dtype, device, seed=99, noisy=noisy)
        return guided_step_reference(i.x if step else None, i.cond, i.uncond, i.weak, i.weights,
                                     i.step if step else None, noise=i.noise)

    def check(name: str) -> None:
        if name not in calls:  # the yardsticks compute something else
            return
        fn, backend = calls[name]
        i = make_inputs(shape, dtype, device, seed=99, noisy=noisy)  # a fresh set: in-place calls change x
        with use_backend(backend) if backend else contextlib.nullcontext():
            got = fn(i)
        _check_close(name, i.x if in_place else got, exact())

    return Case(op, tuple(shape), dtype, device, operands * elem, providers, check)


def w2s_case(shape, dtype, device: str) -> Case:
    """Forward + backward of the segmented W2S loss; v and mid take gradients."""
    elem = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    operands = 10  # forward reads v, u, weak, mid; backward reads them again and writes grad_v, grad_mid
    coefs = torch.tensor([0.3, 0.1, 0.05], device=device)

    def make(seed):
        g = torch.Generator(device=device).manual_seed(seed)
        v, u, weak, mid = (torch.randn(shape, generator=g, device=device).to(dtype) for _ in range(4))
        return v.requires_grad_(), u, weak, mid.requires_grad_()

    sets = [make(seed) for seed in range(input_set_count(operands * elem, device))]

    def train_step(loss_fn):
        def run(s):
            v, u, weak, mid = s
            v.grad = mid.grad = None  # a fresh gradient per call, as after optimizer.zero_grad()
            loss = loss_fn(v, u, weak, mid, coefs)
            loss.sum().backward()
            return loss, v.grad
        return run

    def torch_launchers(s):  # CPU tensors always run the C++ kernel, so call the torch launchers directly
        v, u, weak, mid = (t.detach() for t in s)
        forward, backward = w2s_launchers("torch")
        loss = torch.empty(v.shape[0], dtype=accumulation_dtype(v.dtype), device=device)
        forward(loss, v, u, weak, mid, coefs)
        grad_v, grad_mid = torch.empty_like(v), torch.empty_like(mid)
        backward(grad_v, grad_mid, torch.ones_like(loss), v, u, weak, mid, coefs)
        return loss, grad_v

    steps = {}
    for name in _sgg_backends(device):
        direct = device == "cpu" and name == "torch"
        steps[f"sgg {name}"] = (torch_launchers if direct else train_step(torch.ops.sgg.w2s_loss),
                                None if device == "cpu" else name)
    steps["eager chain"] = (train_step(eager_w2s_loss), None)
    steps["torch.compile chain"] = (train_step(_compiled(eager_w2s_loss)), None)
    providers = _sharing_rotation(steps, sets)
    providers["copy (same bytes)"] = Provider(_same_bytes_copy(operands * elem, device))

    @functools.cache  # one float64 reference (loss, grad_v) serves every provider
    def exact() -> tuple:
        v, u, weak, mid = make(99)
        v64 = v.detach().double().requires_grad_()
        loss = w2s_loss_reference(v64, u, weak, mid.detach(), coefs)
        loss.sum().backward()
        return loss.detach(), v64.grad

    def check(name: str) -> None:
        if name not in steps:  # the copy computes something else
            return
        fn, backend = steps[name]
        with use_backend(backend) if backend else contextlib.nullcontext():
            loss, grad_v = fn(make(99))
        exact_loss, exact_grad_v = exact()
        _check_close(f"{name} (loss)", loss, exact_loss)
        _check_close(f"{name} (grad_v)", grad_v, exact_grad_v)

    return Case("w2s_loss", tuple(shape), dtype, device, operands * elem, providers, check)


def make_case(op: str, shape, dtype, device: str) -> Case:
    return w2s_case(shape, dtype, device) if op == "w2s_loss" else guidance_case(op, shape, dtype, device)


def _check_close(name: str, got: torch.Tensor, exact: torch.Tensor) -> None:
    err = (got.double() - exact).abs().max().item()
    if not err <= 0.05 * exact.abs().max().item():
        raise AssertionError(f"{name} is wrong by {err:.3g} (max |ref| {exact.abs().max().item():.3g})")

