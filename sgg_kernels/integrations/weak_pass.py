"""The weak pass of a diffusers denoiser: the same network with blocks skipped, or a separate weak model.

Both work by overriding ``forward`` on module instances for exactly one call of the denoiser:

    arm_weak_pass(transformer, skip_layers=[7, 8, 9])   # or weak_model=small_transformer
    v_weak = transformer(**inputs)                       # this call is the weak pass; then all is restored
    disarm(transformer)                                  # a no-op here; removes it if the call never came

Whatever the call does, returns or raises, the overrides are removed in a ``finally`` before it
returns, so no hook outlives the pass. A module's own instance-level ``forward`` (an accelerate
offload hook, a diffusers HookRegistry) is saved and put back, not deleted.

A skipped block returns its inputs unchanged, in the order that block class returns its outputs
(``SKIPPED_BLOCK_OUTPUTS``): SD3's joint blocks and the Flux, Flux2 and QwenImage double-stream blocks
return ``(encoder_hidden_states, hidden_states)``, Wan's blocks ``hidden_states``. That equals SD3's
own ``transformer(..., skip_layers=...)``, whatever the number of blocks skipped.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

from torch import nn

ENCODER_AND_HIDDEN = ("encoder_hidden_states", "hidden_states")
SKIPPED_BLOCK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "JointTransformerBlock": ENCODER_AND_HIDDEN,        # SD3 / SD3.5
    "FluxTransformerBlock": ENCODER_AND_HIDDEN,         # Flux double-stream
    "Flux2TransformerBlock": ENCODER_AND_HIDDEN,        # Flux2 double-stream
    "QwenImageTransformerBlock": ENCODER_AND_HIDDEN,    # QwenImage
    "WanTransformerBlock": ("hidden_states",),          # Wan 2.1 / 2.2
}
BLOCK_LISTS = ("transformer_blocks", "blocks")  # the denoiser's main block list, first found
_ARMED = "_sgg_weak_pass_restore"  # attribute on the denoiser: the callable that undoes the override


def denoiser_blocks(denoiser: nn.Module) -> nn.ModuleList:
    """The denoiser's main list of blocks (`transformer_blocks`, else `blocks`)."""
    for name in BLOCK_LISTS:
        blocks = getattr(denoiser, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"skip_layers: {type(denoiser).__name__} has none of the block lists {BLOCK_LISTS}; "
                     "give a weak_model instead")


def check_skip_layers(denoiser: nn.Module, skip_layers: Sequence[int]) -> None:
    """Raises ValueError unless every index names a block of a kind whose skip this module knows."""
    blocks = denoiser_blocks(denoiser)
    for k in skip_layers:
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(blocks):
            raise ValueError(f"skip_layers: {k!r} is not a block index of {type(denoiser).__name__}, which has "
                             f"{len(blocks)} blocks (valid: 0..{len(blocks) - 1})")
        kind = type(blocks[k]).__name__
        if kind not in SKIPPED_BLOCK_OUTPUTS:
            raise ValueError(f"skip_layers: block {k} is a {kind}, whose outputs this module does not know how to "
                             f"pass through (known: {sorted(SKIPPED_BLOCK_OUTPUTS)}); give a weak_model instead")


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


def arm_weak_pass(denoiser: nn.Module, skip_layers: Optional[Sequence[int]] = None,
                  weak_model: Optional[Callable] = None) -> None:
    """Makes the denoiser's next call the weak pass (see the module docstring); exactly one of
    `skip_layers` (checked with `check_skip_layers` beforehand) or `weak_model` is given."""
    disarm(denoiser)
    original = denoiser.forward
    blocks = denoiser_blocks(denoiser) if weak_model is None else None

    def weak_forward(*args, **kwargs):
        restores = [] if weak_model is not None else [_override_forward(blocks[k], _pass_through(blocks[k]))
                                                      for k in skip_layers]
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
