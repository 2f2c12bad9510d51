"""The weak pass of a diffusers denoiser: the same network with blocks skipped, or a separate weak model.

Both work by overriding ``forward`` on module instances for exactly one call of the denoiser:

    arm_weak_pass(transformer, skip_layers=[7, 8, 9])   # or weak_model=small_transformer
    v_weak = transformer(**inputs)                       # this call is the weak pass; then all is restored
    disarm(transformer)                                  # a no-op here; removes it if the call never came

Whatever the call does, returns or raises, the overrides are removed in a ``finally`` before it
returns, so no hook outlives the pass. A module's own instance-level ``forward`` (an accelerate
offload hook, a diffusers HookRegistry) is saved and put back, not deleted.

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
    had_own = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    module.forward = forward

    def restore():
        if had_own:
            module.forward = previous
        else:
            del module.forward
    return restore


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
    original = denoiser.forward
    skipped = blocks_to_skip(denoiser, skip_layers) if weak_model is None else None

    def weak_forward(*args, **kwargs):
        restores = [] if weak_model is not None else [_override_forward(block, _pass_through(block))
                                                      for block in skipped]
        try:
            return weak_model(*args, **kwargs) if weak_model is not None else original(*args, **kwargs)
        finally:
            for restore in reversed(restores):
                restore()
            disarm(denoiser)

    restore_denoiser = _override_forward(denoiser, weak_forward)
    setattr(denoiser, _ARMED, restore_denoiser)


def disarm(denoiser: nn.Module) -> None:
    """Removes an armed weak pass that was not run (a no-op otherwise)."""
    restore = denoiser.__dict__.pop(_ARMED, None)
    if restore is not None:
        restore()


def is_armed(denoiser: nn.Module) -> bool:
    return _ARMED in denoiser.__dict__
