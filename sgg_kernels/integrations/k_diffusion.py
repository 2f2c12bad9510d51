"""SGG for k-diffusion's samplers: a denoiser wrapper that takes the place of the usual CFG wrapper.

    from k_diffusion.sampling import get_sigmas_karras, sample_dpmpp_2m
    from sgg_kernels import GuidanceSchedule
    from sgg_kernels.integrations.k_diffusion import SGGDenoiser

    guided = SGGDenoiser(model, GuidanceSchedule.sgg(cfg_scale=5.0, cag_scale=2.0, boundary=0.5), weak_model=weak)
    x = sample_dpmpp_2m(guided, noise * sigmas[0], sigmas, extra_args={"cond": c, "uncond": u})

k-diffusion's samplers call a denoiser ``model(x, sigma, **extra_args)`` that returns the clean-sample
estimate; ``SGGDenoiser`` is such a denoiser. At each call it reads the call's sigma on the host (one
read per call), maps it to the schedule's noise level t (``sigma_to_t``), evaluates only the passes
the weights at t use (cond always, uncond where ``lam_cdg != 0``, the weak pass where ``lam_cag != 0``)
and combines them with one ``torch.ops.sgg.guide``. Guidance is linear in the prediction at a fixed
``(x, sigma)``, so combining denoised estimates equals combining velocities or noise predictions.

Each evaluation takes the weights at its own sigma: Heun's second evaluation of a step, at the next
sigma, may fall in the next segment. Segments by step index are refused (a denoiser sees sigmas, not
step numbers).

Nothing here imports k-diffusion: the wrapper is a plain callable, so it serves k-diffusion from PyPI
and the copies that A1111, Forge and ComfyUI carry. ``import_k_diffusion_sampling`` imports the PyPI
package's sampling module where its full dependency list is not installed.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from .. import ops as _ops  # noqa: F401  (registers torch.ops.sgg.*)
from ..schedule import GuidanceSchedule
from .skip_layers import MAIN_BLOCK_LISTS, SkipLayers, normalize_skip_layers
from .weak_pass import arm_weak_pass, check_skip_layers, disarm


def edm_sigma_to_t(sigma: Tensor) -> Tensor:
    """t = sigma / (1 + sigma): k-diffusion's sigma of ``x = x0 + sigma * eps`` (EDM, and VP models,
    which k-diffusion's wrappers express in the same form), as the point of the flow path
    ``x_t = (1 - t) x0 + t eps`` that ``x / (1 + sigma)`` is."""
    return sigma / (1 + sigma)


def flow_sigma_to_t(sigma: Tensor) -> Tensor:
    """t = sigma: flow-matching models (SD3, Flux, ...) sampled by k-diffusion-style samplers take the
    flow time itself as sigma (``x = (1 - sigma) x0 + sigma eps``, denoised = x - sigma * v)."""
    return sigma


SIGMA_TO_T: dict[str, Callable[[Tensor], Tensor]] = {"edm": edm_sigma_to_t, "flow": flow_sigma_to_t}


def _inner_models(model: nn.Module):
    """The model, then what it wraps: k-diffusion's wrappers keep the network as ``inner_model``."""
    seen = set()
    while isinstance(model, nn.Module) and id(model) not in seen:
        seen.add(id(model))
        yield model
        model = getattr(model, "inner_model", None)


def _blocks_owner(model: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """The first of the model and its inner models that has one of the named block lists."""
    for candidate in _inner_models(model):
        if any(isinstance(getattr(candidate, name, None), nn.ModuleList) for name in names):
            return candidate
    raise ValueError(f"skip_layers: neither {type(model).__name__} nor the models it wraps (inner_model) have a "
                     f"block list {names}; give a weak_model instead")


class SGGDenoiser(nn.Module):
    """``cond + lam_cdg (cond - uncond) + lam_cag (cond - weak)`` in denoiser space, per the schedule.

    Args:
        model: a k-diffusion denoiser, called as ``model(x, sigma, cond=..., **kwargs)``.
        schedule: a `GuidanceSchedule` with noise-level segments.
        weak_model: a separate weak denoiser with the same call (AutoGuidance).
        skip_layers: blocks skipped in the weak pass: indices into the main block list (``transformer_blocks``
            or ``blocks``), or a dict from block-list name to indices, of the model or of the first
            ``inner_model`` that has such a list.
        sigma_to_t: ``"edm"`` (t = sigma / (1 + sigma); EDM and VP sigmas), ``"flow"`` (t = sigma;
            flow-matching models), or a function of the sigma tensor.
        batch_cond_uncond: run cond and uncond as one batched call where both are tensors of one
            shape (the usual CFG wrapper's way); the weak pass always has a call of its own.
    """

    def __init__(self, model: Callable, schedule: GuidanceSchedule, *, weak_model: Optional[Callable] = None,
                 skip_layers: Optional[SkipLayers] = None,
                 sigma_to_t: Union[str, Callable[[Tensor], Tensor]] = "edm", batch_cond_uncond: bool = True):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be a callable denoiser model(x, sigma, cond=...), got {type(model).__name__}")
        if not isinstance(schedule, GuidanceSchedule):
            raise TypeError(f"schedule must be a GuidanceSchedule, got {type(schedule).__name__}")
        stepwise = [seg for seg in schedule.segments if seg.unit == "step"]
        if stepwise:
            raise ValueError(f"schedule: a k-diffusion denoiser sees sigmas, not step numbers, so segments by step "
                             f"cannot be placed; give noise-level segments instead of {stepwise}")
        if skip_layers is not None and weak_model is not None:
            raise ValueError("give skip_layers or weak_model for the weak pass, not both")
        if any(seg.kind == "cag" for seg in schedule.segments) and skip_layers is None and weak_model is None:
            raise ValueError("the schedule has weak-model ('cag') segments, so the weak pass needs skip_layers "
                             "(blocks of the model to skip) or weak_model (a separate denoiser); neither was given")
        self._skip_owner = None
        if skip_layers is not None:
            skip_layers = normalize_skip_layers(skip_layers)
            if not isinstance(model, nn.Module):
                raise TypeError("skip_layers needs the model to be an nn.Module holding the blocks")
            self._skip_owner = _blocks_owner(model, tuple(skip_layers) if isinstance(skip_layers, dict)
                                             else MAIN_BLOCK_LISTS)
            check_skip_layers(self._skip_owner, skip_layers)
        if isinstance(sigma_to_t, str):
            if sigma_to_t not in SIGMA_TO_T:
                raise ValueError(f"sigma_to_t must be one of {sorted(SIGMA_TO_T)} or a function, got {sigma_to_t!r}")
            self._sigma_to_t_name, sigma_to_t = sigma_to_t, SIGMA_TO_T[sigma_to_t]
        elif callable(sigma_to_t):
            self._sigma_to_t_name = getattr(sigma_to_t, "__name__", "the given function")
        else:
            raise TypeError(f"sigma_to_t must be 'edm', 'flow' or a function, got {type(sigma_to_t).__name__}")
        self.inner_model, self.schedule, self.weak_model, self.skip_layers = model, schedule, weak_model, skip_layers
        self.sigma_to_t, self.batch_cond_uncond = sigma_to_t, bool(batch_cond_uncond)
        self._on_device: dict[tuple, Tensor] = {}

    def noise_level(self, sigma: Union[Tensor, float]) -> Tensor:
        """float64 t for each sigma, checked to lie in [0, 1]."""
        sigma = torch.as_tensor(sigma).detach().to("cpu", torch.float64).reshape(-1)
        t = self.sigma_to_t(sigma)
        bad = ~(torch.isfinite(t) & (t >= 0) & (t <= 1))
        if bool(bad.any()):
            k = int(bad.nonzero()[0])
            raise ValueError(f"sigma_to_t ({self._sigma_to_t_name}) maps sigma = {float(sigma[k]):.6g} to "
                             f"t = {float(t[k]):.6g}, outside [0, 1]; flow models have sigmas in [0, 1] "
                             "(sigma_to_t='flow'), EDM and VP sigmas reach far above 1 (sigma_to_t='edm')")
        return t

    def weights_at(self, sigma: Union[Tensor, float]) -> Tensor:
        """float32 [B, 2]: each sample's (lam_cdg, lam_cag) at its sigma."""
        return self.schedule.weights(self.noise_level(sigma))

    def forward(self, x: Tensor, sigma: Tensor, cond: Any = None, uncond: Any = None, **kwargs) -> Tensor:
        table = self.weights_at(sigma)
        if table.shape[0] == 1 and x.shape[0] != 1:
            table = table.expand(x.shape[0], 2)
        if table.shape[0] != x.shape[0]:
            raise ValueError(f"sigma has {table.shape[0]} entries but x has a batch of {x.shape[0]}")
        need_uncond, need_weak = (bool(table[:, k].ne(0).any()) for k in (0, 1))
        if need_uncond and uncond is None:
            raise ValueError(f"uncond: the schedule uses the unconditional prediction at sigma = "
                             f"{float(torch.as_tensor(sigma).reshape(-1)[0]):.6g} but extra_args gives no 'uncond'")
        if need_uncond and self.batch_cond_uncond and _batchable(cond, uncond):
            both = self.inner_model(torch.cat([x, x]), torch.cat([sigma, sigma]) if sigma.dim() else sigma,
                              cond=torch.cat([cond, uncond]), **kwargs)
            denoised_cond, denoised_uncond = both.chunk(2)
        else:
            denoised_cond = self.inner_model(x, sigma, cond=cond, **kwargs)
            denoised_uncond = self.inner_model(x, sigma, cond=uncond, **kwargs) if need_uncond else None
        denoised_weak = self._weak_pass(x, sigma, cond, kwargs) if need_weak else None
        return torch.ops.sgg.guide(denoised_cond, denoised_uncond, denoised_weak, self._on(table, x.device))

    def _weak_pass(self, x: Tensor, sigma: Tensor, cond: Any, kwargs: dict) -> Tensor:
        """The weak model, or the model with the skipped blocks armed for exactly this call."""
        if self.weak_model is not None:
            return self.weak_model(x, sigma, cond=cond, **kwargs)
        arm_weak_pass(self._skip_owner, skip_layers=self.skip_layers)
        try:
            return self.inner_model(x, sigma, cond=cond, **kwargs)
        finally:
            disarm(self._skip_owner)  # a no-op when the call reached the armed forward

    def _on(self, table: Tensor, device: torch.device) -> Tensor:
        """The weights as the op takes them: shared [2] when every sample has the same, else [B, 2];
        cached per value, so a run copies each distinct pair to the device once."""
        shared = bool((table == table[0]).all())
        key = (device, tuple(table[0].tolist())) if shared else None
        if key is not None and key in self._on_device:
            return self._on_device[key]
        weights = (table[0] if shared else table).to(device=device, dtype=torch.float32)
        if key is not None:
            self._on_device[key] = weights
        return weights


def _batchable(cond: Any, uncond: Any) -> bool:
    return isinstance(cond, Tensor) and isinstance(uncond, Tensor) and cond.shape == uncond.shape


def import_k_diffusion_sampling():
    """``k_diffusion.sampling``, also where k-diffusion's full dependency list is not installed.

    ``import k_diffusion`` imports the package's training and evaluation code too (CLIP, clean-fid,
    scikit-image, and dctorch, which requires numpy < 2). The sampling module itself needs only scipy,
    torchdiffeq, torchsde, tqdm and ``k_diffusion.utils`` (Pillow, safetensors, torchvision). Where the
    package import fails on one of the others, this registers ``k_diffusion`` as a bare package and
    imports its sampling module alone; ``import k_diffusion.sampling`` then works in the process too.
    """
    if importlib.util.find_spec("k_diffusion") is None:
        raise ImportError("k-diffusion is not installed: pip install k-diffusion (or this package's "
                          "[k-diffusion] extra)")
    try:
        return importlib.import_module("k_diffusion.sampling")
    except ImportError as error:
        if error.name is None or error.name.split(".")[0] == "k_diffusion":
            raise
    for name in [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]:
        del sys.modules[name]  # what the failed package import left half-initialised
    spec = importlib.util.find_spec("k_diffusion")
    bare = importlib.util.module_from_spec(importlib.machinery.ModuleSpec("k_diffusion", None, is_package=True))
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = bare
    return importlib.import_module("k_diffusion.sampling")
