"""Which blocks of which diffusers transformers the weak pass can skip, and the published settings.

A skipped block returns its inputs unchanged, in the order its class returns its outputs
(``SKIPPED_BLOCK_OUTPUTS``, read from each class's ``forward`` in diffusers 0.42). A transformer may
hold several block lists (Flux and HunyuanVideo: double-stream ``transformer_blocks`` and
single-stream ``single_transformer_blocks``), so ``skip_layers`` takes either a list of indices into
the main list (``transformer_blocks``, else ``blocks``) or a dict from block-list name to indices:

    skip_layer_candidates(flux)   # {'transformer_blocks': [0, ..., 18], 'single_transformer_blocks': [0, ..., 37]}
    SGGGuider(schedule, skip_layers={"transformer_blocks": [7], "single_transformer_blocks": [7, 8, 9]})

``SKIP_LAYER_PRESETS`` holds, per transformer class, the blocks a published setting skips, with its
source. Families without a published block-skip setting (Flux, Flux2, QwenImage, Wan) have none here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

from torch import nn

HIDDEN = ("hidden_states",)
ENCODER_AND_HIDDEN = ("encoder_hidden_states", "hidden_states")
HIDDEN_AND_ENCODER = ("hidden_states", "encoder_hidden_states")
SKIPPED_BLOCK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "JointTransformerBlock": ENCODER_AND_HIDDEN,                 # SD3 / SD3.5
    "FluxTransformerBlock": ENCODER_AND_HIDDEN,                  # Flux double-stream
    "FluxSingleTransformerBlock": ENCODER_AND_HIDDEN,            # Flux single-stream
    "Flux2TransformerBlock": ENCODER_AND_HIDDEN,                 # Flux2 double-stream
    "QwenImageTransformerBlock": ENCODER_AND_HIDDEN,             # QwenImage
    "WanTransformerBlock": HIDDEN,                               # Wan 2.1 / 2.2
    "LTXVideoTransformerBlock": HIDDEN,                          # LTX-Video
    "HunyuanVideoTransformerBlock": HIDDEN_AND_ENCODER,          # HunyuanVideo double-stream
    "HunyuanVideoSingleTransformerBlock": HIDDEN_AND_ENCODER,    # HunyuanVideo single-stream
    "HunyuanVideoTokenReplaceTransformerBlock": HIDDEN_AND_ENCODER,        # HunyuanVideo I2V
    "HunyuanVideoTokenReplaceSingleTransformerBlock": HIDDEN_AND_ENCODER,  # HunyuanVideo I2V
    "CogVideoXBlock": HIDDEN_AND_ENCODER,                        # CogVideoX
    "MochiTransformerBlock": HIDDEN_AND_ENCODER,                 # Mochi
}
MAIN_BLOCK_LISTS = ("transformer_blocks", "blocks")  # what a plain list of indices refers to, first found
SkipLayers = Union[Sequence[int], Mapping[str, Sequence[int]]]


def _is_index(k) -> bool:
    return isinstance(k, int) and not isinstance(k, bool)


def normalize_skip_layers(skip_layers: SkipLayers) -> Union[list[int], dict[str, list[int]]]:
    """A plain list or a dict of lists (JSON-ready); raises ValueError on any other form."""
    if isinstance(skip_layers, Mapping):
        if not skip_layers or not all(isinstance(name, str) for name in skip_layers):
            raise ValueError(f"skip_layers as a dict maps block-list names to indices, got {skip_layers!r}")
        return {name: normalize_skip_layers(indices) for name, indices in skip_layers.items()}
    if isinstance(skip_layers, (str, bytes)) or not isinstance(skip_layers, Sequence) or not skip_layers \
            or not all(_is_index(k) for k in skip_layers):
        raise ValueError(f"skip_layers must be a non-empty list of block indices, or a dict from block-list name "
                         f"to such lists, got {skip_layers!r}")
    return list(skip_layers)


def main_block_list(denoiser: nn.Module) -> str:
    """The name of the denoiser's main block list (`transformer_blocks`, else `blocks`)."""
    for name in MAIN_BLOCK_LISTS:
        if isinstance(getattr(denoiser, name, None), nn.ModuleList):
            return name
    raise ValueError(f"skip_layers: {type(denoiser).__name__} has none of the block lists {MAIN_BLOCK_LISTS}"
                     f"{_unet_note(denoiser)}; give a weak_model instead")


def _unet_note(denoiser: nn.Module) -> str:
    if hasattr(denoiser, "down_blocks") and hasattr(denoiser, "up_blocks"):
        return (" (a UNet: its blocks change resolution and channels and pair through skip connections, so no "
                "block can return its input; docs/diffusers.md says why SDXL has no skip-layer weak pass)")
    return ""


def skip_layer_candidates(transformer: nn.Module) -> dict[str, list[int]]:
    """Every block list of the transformer whose blocks the weak pass can skip, with their indices."""
    return {name: list(range(len(child))) for name, child in transformer.named_children()
            if isinstance(child, nn.ModuleList) and len(child)
            and all(type(block).__name__ in SKIPPED_BLOCK_OUTPUTS for block in child)}


def blocks_to_skip(denoiser: nn.Module, skip_layers: SkipLayers) -> list[nn.Module]:
    """The blocks `skip_layers` names, checked: raises ValueError naming a list or index that the
    denoiser lacks, or a block of a class whose skip this module does not know."""
    by_list = normalize_skip_layers(skip_layers)
    if not isinstance(by_list, dict):
        by_list = {main_block_list(denoiser): by_list}
    chosen = []
    for name, indices in by_list.items():
        blocks = getattr(denoiser, name, None)
        if not isinstance(blocks, nn.ModuleList):
            lists = [n for n, c in denoiser.named_children() if isinstance(c, nn.ModuleList)]
            raise ValueError(f"skip_layers: {type(denoiser).__name__} has no block list {name!r} (its block lists: "
                             f"{lists})")
        for k in indices:
            if not 0 <= k < len(blocks):
                raise ValueError(f"skip_layers: {k!r} is not a block index of {type(denoiser).__name__}, which has "
                                 f"{len(blocks)} blocks in {name} (valid: 0..{len(blocks) - 1})")
            kind = type(blocks[k]).__name__
            if kind not in SKIPPED_BLOCK_OUTPUTS:
                raise ValueError(f"skip_layers: block {k} of {name} is a {kind}, whose outputs this module does not "
                                 f"know how to pass through (known: {sorted(SKIPPED_BLOCK_OUTPUTS)}); give a "
                                 "weak_model instead")
            chosen.append(blocks[k])
    return chosen


@dataclass(frozen=True)
class SkipLayerPreset:
    """A published block-skip setting: the checkpoint it was given for, the blocks, the guidance
    scale published with them (`form` says in which formula), and where it was published."""

    model: str
    skip_layers: dict[str, tuple[int, ...]]
    scale: float
    form: str
    source: str


# "STG" is Spatiotemporal Skip Guidance (Hyung et al., CVPR 2025): its diffusers pipelines keep the
# perturbed rows' block inputs as the block's outputs, i.e. skip the block, and add
# stg_scale * (cond - perturbed) to CFG, so its scale is this package's lam_cag.
SKIP_LAYER_PRESETS: dict[str, SkipLayerPreset] = {
    "SD3Transformer2DModel": SkipLayerPreset(
        "stabilityai/stable-diffusion-3.5-medium", {"transformer_blocks": (7, 8, 9)}, 2.5, "SLG: + scale (c - skip)",
        "Stability AI's SD3.5 reference sampler (sd3_infer.py, CONFIGS['sd3.5_medium']['skip_layer_config']: layers "
        "[7, 8, 9], scale 2.5, on 1%..20% of the steps, CFG 4.0); the SGG paper's SD3.5 setting uses the same blocks "
        "at 3.0 (GuidanceSchedule.sd3_paper)"),
    "LTXVideoTransformer3DModel": SkipLayerPreset(
        "Lightricks/LTX-Video (0.9.x, 28 blocks)", {"transformer_blocks": (19,)}, 1.0, "STG: + scale (c - skip)",
        "the STG authors' diffusers example (junhahyung/STGuidance, LTXVideo/inference.py and README: block 19)"),
    "HunyuanVideoTransformer3DModel": SkipLayerPreset(
        "tencent/HunyuanVideo", {"transformer_blocks": (2,)}, 1.0, "STG: + scale (c - skip)",
        "the STG authors' diffusers example (junhahyung/STGuidance, diffusers/hunyuanvideo/inference.py: STG-R, "
        "double-stream block 2, scale 1.0)"),
    "CogVideoXTransformer3DModel": SkipLayerPreset(
        "THUDM/CogVideoX-2b", {"transformer_blocks": (11,)}, 1.0, "STG: + scale (c - skip)",
        "the STG authors' diffusers example (junhahyung/STGuidance, CogVideoX/inference.py: block 11, scale 1.0, "
        "CFG 6)"),
    "MochiTransformer3DModel": SkipLayerPreset(
        "genmo/mochi-1-preview", {"transformer_blocks": (34,)}, 1.0, "STG: + scale (c - skip)",
        "the STG authors' diffusers example (junhahyung/STGuidance README and Mochi/inference.py; diffusers' "
        "community pipelines README, Spatiotemporal Skip Guidance: block 34, scale 1.0)"),
}


def skip_layer_preset(transformer: nn.Module) -> Optional[SkipLayerPreset]:
    """The published preset for the transformer's class, checked against its blocks; None where no
    block-skip setting has been published for the family."""
    preset = SKIP_LAYER_PRESETS.get(type(transformer).__name__)
    if preset is not None:
        try:
            blocks_to_skip(transformer, {name: list(ks) for name, ks in preset.skip_layers.items()})
        except ValueError as e:
            raise ValueError(f"the published preset for {type(transformer).__name__} ({preset.model}) does not fit "
                             f"this transformer: {e}") from e
    return preset
