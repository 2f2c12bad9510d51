"""The weak pass of a diffusers denoiser: the same network with blocks skipped, or a separate weak model.

Both work by overriding, on the module instances, the denoiser's call and, within it, the ``forward``
of the weak model's stand-in (the denoiser itself, or the skipped blocks), for exactly one call:

    arm_weak_pass(transformer, skip_layers=[7, 8, 9])   # or weak_model=small_transformer
    v_weak = transformer(**inputs)                       # this call is the weak pass; then all is restored
    disarm(transformer)                                  # a no-op here; removes it if the call never came

The denoiser's override wraps its whole call, its forward hooks included: whatever the call does,
returns or raises (in ``forward`` or in a hook around it, such as an offloading or profiling hook),
the overrides are removed in a ``finally`` before it returns, so no hook outlives the pass. A
module's own instance-level ``forward`` (an accelerate offload hook, a diffusers HookRegistry) is
saved and put back, not deleted.

Compiled denoisers work in both forms. ``torch.compile(transformer)`` returns a wrapper whose
attribute writes go to the wrapped module, so the override and its marker live in the wrapper's own
``__dict__``; ``transformer.compile()`` (in place) calls ``_compiled_call_impl``, which is then the
call that is wrapped.

A skipped block returns its inputs unchanged, in the order that block class returns its outputs;
which blocks can be skipped, in which block lists, is :mod:`.skip_layers`' table. For SD3 that equals
its own ``transformer(..., skip_layers=...)``, whatever the number of blocks skipped.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional

from torch import nn

from .skip_layers import SKIPPED_BLOCK_OUTPUTS, SkipLayers, blocks_to_skip

_ARMED = "_sgg_weak_pass_restore"  # attribute on the denoiser: the callable that undoes the override


def check_skip_layers(denoiser: nn.Module, skip_layers: SkipLayers) -> None:
    """Raises ValueError unless every index names a block of a kind whose skip this module knows."""
    blocks_to_skip(denoiser, skip_layers)


def _override_forward(module: nn.Module, forward: Callable) -> Callable[[], None]:
    """Makes `forward` the module's forward; returns the function that restores the previous one."""
    return _override_own(module, "forward", forward)


def _override_own(module: nn.Module, name: str, value: Callable) -> Callable[[], None]:
    """Puts `value` in the instance's own __dict__ under `name`, past any __setattr__ (a compiled
    module's forwards writes to the module it wraps); returns the function that undoes it."""
    had_own, previous = name in module.__dict__, module.__dict__.get(name)
    module.__dict__[name] = value

    def restore():
        if had_own:
            module.__dict__[name] = previous
        else:
            module.__dict__.pop(name, None)
    return restore


def _call_slot(module: nn.Module) -> str:
    """The attribute nn.Module.__call__ calls: the in-place compiled call after `module.compile()`."""
    return "_compiled_call_impl" if getattr(module, "_compiled_call_impl", None) is not None else "_call_impl"


def _pass_through(block: nn.Module) -> Callable:
    names = SKIPPED_BLOCK_OUTPUTS[type(block).__name__]
    signature = inspect.signature(type(block).forward)  # the class's: an instance hook may hide the names

    def skipped(*args, **kwargs):
        given = signature.bind_partial(block, *args, **kwargs).arguments
        out = tuple(given[name] for name in names)
        return out if len(out) > 1 else out[0]
    return skipped


def arm_weak_pass(denoiser: nn.Module, skip_layers: Optional[SkipLayers] = None,
                  weak_model: Optional[Callable] = None) -> None:
    """Makes the denoiser's next call the weak pass (see the module docstring); exactly one of
    `skip_layers` (checked with `check_skip_layers` beforehand) or `weak_model` is given."""
    disarm(denoiser)
    slot = _call_slot(denoiser)
    strong_call = getattr(denoiser, slot)  # the call with the module's hooks, compiled or not
    skipped = blocks_to_skip(denoiser, skip_layers) if weak_model is None else None

    def weak_call(*args, **kwargs):
        overrides = ([(denoiser, weak_model)] if weak_model is not None
                     else [(block, _pass_through(block)) for block in skipped])
        restores = []
        try:
            for module, forward in overrides:
                restores.append(_override_forward(module, forward))
            return strong_call(*args, **kwargs)
        finally:
            for restore in reversed(restores):
                restore()
            disarm(denoiser)

    restore_call = _override_own(denoiser, slot, weak_call)
    denoiser.__dict__[_ARMED] = restore_call


def disarm(denoiser: nn.Module) -> None:
    """Removes an armed weak pass that was not run (a no-op otherwise)."""
    restore = denoiser.__dict__.pop(_ARMED, None)
    if restore is not None:
        restore()


def is_armed(denoiser: nn.Module) -> bool:
    return _ARMED in denoiser.__dict__
