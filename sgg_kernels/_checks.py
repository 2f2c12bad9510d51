"""Argument checks shared by every backend and by the fake kernels.

Each check runs before anything is allocated or written, and names the argument and the problem.
No check reads tensor values, so none synchronises with the device.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(t: Tensor) -> list:
    return list(t.shape)


def check_tensor(name: str, t, op: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"sgg.{op}: {name} must be a Tensor, got {type(t).__name__}")


def check_batched_float(name: str, t, op: str) -> None:
    """t is a tensor of a supported floating dtype with a batch dimension."""
    check_tensor(name, t, op)
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"sgg.{op}: {name} has dtype {t.dtype}; supported are float16, bfloat16, float32, float64")
    if t.dim() < 1:
        raise ValueError(f"sgg.{op}: {name} must have a batch dimension, got a 0-d tensor")


def check_operand(name: str, t, ref: Tensor, op: str, ref_name: str = "cond") -> None:
    """t has ref's device, dtype and shape."""
    check_tensor(name, t, op)
    if t.device != ref.device:
        raise ValueError(f"sgg.{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"sgg.{op}: {name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; "
                        "all operands share one dtype")
    if t.shape != ref.shape:
        raise ValueError(f"sgg.{op}: {name} has shape {_shape(t)} but {ref_name} has shape {_shape(ref)}")


def check_coefficients(name: str, t, ref: Tensor, op: str, columns: int = 2, ref_name: str = "cond") -> None:
    """t is a contiguous float32 [columns] or [B, columns] tensor on ref's device, B = ref.shape[0]."""
    check_tensor(name, t, op)
    batch = ref.shape[0]
    if t.dtype != torch.float32:
        raise TypeError(f"sgg.{op}: {name} must be float32, got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"sgg.{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    if not (t.shape == (columns,) or t.shape == (batch, columns)):
        raise ValueError(f"sgg.{op}: {name} must have shape [{columns}] or [B, {columns}] = [{batch}, {columns}], "
                         f"got {_shape(t)}")
    if not t.is_contiguous():
        raise ValueError(f"sgg.{op}: {name} must be contiguous")


def _span(t: Tensor) -> tuple[int, int]:
    """[first, last] byte addresses that t can touch."""
    start = t.data_ptr()
    extent = sum((s - 1) * st for s, st in zip(t.shape, t.stride())) if t.numel() else -1
    return start, start + (extent + 1) * t.element_size() - 1


def _has_memory(t: Tensor) -> bool:
    """False for fake and meta tensors, which have shapes but no addresses to compare."""
    return not isinstance(t, torch._subclasses.FakeTensor) and t.device.type != "meta"


def _check_writable(x: Tensor, others: dict, op: str) -> None:
    if x.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"sgg.{op}: x requires grad; use the out-of-place guided_step for autograd")
    if not _has_memory(x):
        return
    if x.numel() and torch._debug_has_internal_overlap(x) == 1:
        raise ValueError(f"sgg.{op}: x has overlapping memory (an expanded view?) and cannot be written in place")
    lo, hi = _span(x)
    for name, t in others.items():
        if t is None or t.numel() == 0 or x.numel() == 0:
            continue
        if t.data_ptr() == x.data_ptr() and t.stride() == x.stride():
            continue  # the same elements: each is read before it is written
        t_lo, t_hi = _span(t)
        if t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() and t_lo <= hi and lo <= t_hi:
            raise ValueError(f"sgg.{op}: x partially overlaps {name}; writing x in place would corrupt {name}")


def check_guidance_args(op: str, x: Optional[Tensor], cond: Tensor, uncond: Optional[Tensor],
                        weak: Optional[Tensor], weights: Tensor, step: Optional[Tensor],
                        in_place: bool = False) -> None:
    """Validates the arguments of sgg.guide (x and step None), sgg.guided_step and sgg.guided_step_."""
    check_batched_float("cond", cond, op)
    steps = op != "guide"  # x and step are required by the step ops and absent from guide
    for name, t in (("x", x), ("uncond", uncond), ("weak", weak)):
        if t is not None or (name == "x" and steps):
            check_operand(name, t, cond, op)
    check_coefficients("weights", weights, cond, op)
    if steps:
        check_coefficients("step", step, cond, op)
    if in_place:
        _check_writable(x, {"cond": cond, "uncond": uncond, "weak": weak}, op)
