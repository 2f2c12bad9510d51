"""The traced (fake) kernels of the public ops: what torch.compile and torch.export run on fake tensors,
whose sizes may be symbolic. They make the outputs' shapes and check the call with the messages of the
compiled kernels' checks (csrc/checks.cpp), so a traced call is refused exactly as the eager one is;
the memory-overlap tests are the library's own (sgg::_self_overlaps, sgg::_overlap). Registered from
Python because a stable-ABI kernel sees concrete sizes only. Errors are RuntimeError, as from the
compiled kernels. tests/test_bad_input.py holds the two to the same messages.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fail(op: str, message: str):
    raise RuntimeError(f"sgg.{op}: {message}")


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _check(op: str, condition, message) -> None:
    """condition may be symbolic: an unbacked size (torch._dynamo.mark_unbacked) becomes a run-time
    assertion instead of a guard, so one graph serves every batch size."""
    torch._check(condition, lambda: f"sgg.{op}: {message()}")


def _defined(op: str, name: str, t) -> None:
    if t is None:
        _fail(op, f"{name} must be a Tensor, got None")


def _batched_float(op: str, name: str, t: Tensor) -> None:
    _defined(op, name, t)
    if t.dtype not in _FLOATS:
        _fail(op, f"{name} has dtype {t.dtype}; supported are float16, bfloat16, float32, float64")
    if t.dim() < 1:
        _fail(op, f"{name} must have a batch dimension, got a 0-d tensor")


def _operand(op: str, name: str, t: Tensor, ref: Tensor, ref_name: str) -> None:
    _defined(op, name, t)
    if t.device != ref.device:
        _fail(op, f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        _fail(op, f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; all operands share one dtype")
    message = lambda: f"{name} has shape {_shape(t)} but {ref_name} has shape {_shape(ref)}"  # noqa: E731
    if t.dim() != ref.dim():
        _fail(op, message())
    for a, b in zip(t.shape, ref.shape):
        _check(op, a == b, message)


def _coefficients(op: str, name: str, t: Tensor, ref: Tensor, columns: int, ref_name: str) -> None:
    _defined(op, name, t)
    if t.dtype != torch.float32:
        _fail(op, f"{name} must be float32, got {t.dtype}")
    if t.device != ref.device:
        _fail(op, f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    message = lambda: (f"{name} must have shape [{columns}] or [B, {columns}] = [{ref.shape[0]}, {columns}], "  # noqa
                       f"got {_shape(t)}")
    if t.dim() == 1:
        _check(op, t.shape[0] == columns, message)
    elif t.dim() == 2:
        _check(op, t.shape[1] == columns, message)
        _check(op, t.shape[0] == ref.shape[0], message)
    else:
        _fail(op, message())
    if not t.is_contiguous():
        _fail(op, f"{name} must be contiguous")


def _concrete(t: Tensor) -> Optional[tuple[list[int], list[int], int]]:
    """t's sizes, strides and storage offset as ints, or None when any is symbolic."""
    values = (*t.shape, *t.stride(), t.storage_offset())
    if not all(isinstance(v, int) for v in values):
        return None
    return list(t.shape), list(t.stride()), int(t.storage_offset())


def _overlap(written: Tensor, read: Tensor) -> Optional[int]:
    """0 none, 1 same, 2 partial, 3 unknown (csrc/overlap.h), or None when a layout is symbolic."""
    if not torch._C._is_alias_of(written, read):
        return 0
    w, r = _concrete(written), _concrete(read)
    if w is None or r is None:
        return None
    return torch.ops.sgg._overlap(w[0], w[1], w[2], written.element_size(), r[0], r[1], r[2], read.element_size())


def _writable(op: str, x: Tensor, inputs: dict, coefficients: dict) -> None:
    if x.is_inference() and not torch.is_inference_mode_enabled():
        _fail(op, "x is an inference tensor; it can be written in place only inside torch.inference_mode()")
    layout = _concrete(x)
    if layout is not None and torch.ops.sgg._self_overlaps(layout[0], layout[1]):
        _fail(op, "x has overlapping memory (an expanded or overlapping view) and cannot be written in place")
    for name, t in coefficients.items():
        if t is not None and _overlap(x, t) != 0:
            _fail(op, f"x shares memory with {name}, which every sample reads while x is written; writing x in place "
                      f"would change {name} before it is read. Pass a copy of {name}")
    for name, t in inputs.items():
        status = None if t is None else _overlap(x, t)
        if status == 2:
            _fail(op, f"x partially overlaps {name}; writing x in place would corrupt {name}")
        if status == 3:
            _fail(op, f"x may overlap {name} (same memory, layouts too different to prove the elements disjoint); "
                      f"pass a copy of {name}")


def check_guidance_args(op, x, cond, uncond, weak, weights, step, noise, in_place: bool) -> None:
    _batched_float(op, "cond", cond)
    for name, t in (("x", x), ("uncond", uncond), ("weak", weak), ("noise", noise)):
        if t is not None or (name == "x" and op != "guide"):
            _operand(op, name, t, cond, "cond")
    _coefficients(op, "weights", weights, cond, 2, "cond")
    if op != "guide":
        _coefficients(op, "step", step, cond, 2 if noise is None else 3, "cond")
    if in_place:
        _writable(op, x, {"cond": cond, "uncond": uncond, "weak": weak, "noise": noise},
                  {"weights": weights, "step": step})


def check_w2s_loss_args(op, v, u, weak, mid, coefs, grad=None) -> None:
    _batched_float(op, "v", v)
    _operand(op, "u", u, v, "v")
    for name, t in (("weak", weak), ("mid", mid)):
        if t is not None:
            _operand(op, name, t, v, "v")
    _coefficients(op, "coefs", coefs, v, 3, "v")
    if op == "w2s_loss_backward":
        _defined(op, "grad", grad)
        message = lambda: f"grad must have shape [{v.shape[0]}] on {v.device}, got {_shape(grad)} on {grad.device}"  # noqa
        if grad.dim() != 1 or grad.device != v.device:
            _fail(op, message())
        _check(op, grad.shape[0] == v.shape[0], message)


def _accumulation(v: Tensor) -> torch.dtype:
    return torch.float64 if v.dtype == torch.float64 else torch.float32


@torch.library.register_fake("sgg::guide")
def _guide_fake(cond, uncond, weak, weights):
    check_guidance_args("guide", None, cond, uncond, weak, weights, None, None, False)
    return torch.empty_like(cond)


@torch.library.register_fake("sgg::guided_step")
def _guided_step_fake(x, cond, uncond, weak, weights, step, noise=None):
    check_guidance_args("guided_step", x, cond, uncond, weak, weights, step, noise, False)
    return torch.empty_like(x)


@torch.library.register_fake("sgg::guided_step_")
def _guided_step__fake(x, cond, uncond, weak, weights, step, noise=None):
    check_guidance_args("guided_step_", x, cond, uncond, weak, weights, step, noise, True)


@torch.library.register_fake("sgg::w2s_loss")
def _w2s_loss_fake(v, u, weak, mid, coefs):
    check_w2s_loss_args("w2s_loss", v, u, weak, mid, coefs)
    return v.new_empty((v.shape[0],), dtype=_accumulation(v))


@torch.library.register_fake("sgg::w2s_loss_backward")
def _w2s_loss_backward_fake(grad, v, u, weak, mid, coefs):
    check_w2s_loss_args("w2s_loss_backward", v, u, weak, mid, coefs, grad)
    grad_mid = torch.empty(v.shape, dtype=v.dtype, device=v.device) if mid is not None else v.new_empty((0,))
    return torch.empty(v.shape, dtype=v.dtype, device=v.device), grad_mid
