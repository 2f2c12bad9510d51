"""The skip-layer weak pass on the DiT families beyond SD3, Wan, QwenImage and Flux double-stream: Flux
single-stream blocks (alone and with double-stream ones), LTX-Video, HunyuanVideo (double- and
single-stream), CogVideoX and Mochi, on tiny random configs of diffusers' own classes. Each skip equals
the network without those blocks; each family runs in SGGGuider, driven by the calls diffusers'
modular denoise steps make, against a transcribed loop, with no hook left after a run or a raise.
Plus skip_layer_candidates, the published presets, and the refusal for UNets."""
import copy

import pytest
import torch
from torch import nn

pytest.importorskip("diffusers")
from diffusers import (CogVideoXTransformer3DModel, FluxTransformer2DModel,  # noqa: E402
                       HunyuanVideoTransformer3DModel, LTXVideoTransformer3DModel, MochiTransformer3DModel,
                       SD3Transformer2DModel, UNet2DConditionModel)

from sgg_kernels import GuidanceSchedule  # noqa: E402
from sgg_kernels.integrations.diffusers_guider import SGGGuider  # noqa: E402
from sgg_kernels.integrations.skip_layers import (SKIP_LAYER_PRESETS, skip_layer_candidates,  # noqa: E402
                                                  skip_layer_preset)
from sgg_kernels.integrations.weak_pass import arm_weak_pass, is_armed  # noqa: E402

CFG, W, BOUNDARY, STEPS = 4.0, 2.5, 0.6, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(family, **sizes):
    """(transformer, latents, fixed inputs, cond text inputs, uncond text inputs) for a tiny random config."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    text = [dict(encoder_hidden_states=torch.randn(1, 5, 16, generator=g)) for _ in range(2)]
    mask = dict(encoder_attention_mask=torch.ones(1, 5))
    if family == "flux":
        model = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=sizes.get("double", 2),
                                       num_single_layers=sizes.get("single", 3), attention_head_dim=8,
                                       num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16,
                                       axes_dims_rope=(2, 2, 4))
        x, fixed = torch.randn(1, 4, 4, generator=g), dict(img_ids=torch.zeros(4, 3), txt_ids=torch.zeros(5, 3))
        text = [dict(t, pooled_projections=torch.randn(1, 16, generator=g)) for t in text]
    elif family == "ltx":
        model = LTXVideoTransformer3DModel(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1,
                                           num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                           num_layers=sizes.get("double", 3), caption_channels=16)
        x, fixed = torch.randn(1, 8, 4, generator=g), dict(num_frames=2, height=2, width=2)
        text = [dict(t, **mask) for t in text]
    elif family == "hunyuan_video":
        model = HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2,
                                               attention_head_dim=8, num_layers=sizes.get("double", 2),
                                               num_single_layers=sizes.get("single", 2), num_refiner_layers=1,
                                               patch_size=1, patch_size_t=1, text_embed_dim=16, pooled_projection_dim=8,
                                               rope_axes_dim=(2, 2, 4), guidance_embeds=False)
        x, fixed = torch.randn(1, 4, 2, 2, 2, generator=g), {}
        text = [dict(t, **mask, pooled_projections=torch.randn(1, 8, generator=g)) for t in text]
    elif family == "cogvideox":
        model = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                            time_embed_dim=4, text_embed_dim=16, num_layers=sizes.get("double", 3),
                                            sample_width=4, sample_height=4, sample_frames=5, patch_size=2,
                                            temporal_compression_ratio=4, max_text_seq_length=5)
        x, fixed = torch.randn(1, 2, 4, 4, 4, generator=g), {}
    elif family == "mochi":
        model = MochiTransformer3DModel(patch_size=2, num_attention_heads=2, attention_head_dim=8,
                                        num_layers=sizes.get("double", 3), pooled_projection_dim=16, in_channels=4,
                                        text_embed_dim=16, time_embed_dim=4, max_sequence_length=5)
        x, fixed = torch.randn(1, 4, 2, 4, 4, generator=g), {}
        text = [dict(t, **mask) for t in text]
    return model.eval(), x, fixed, text[0], text[1]


SKIPS = {  # case: (family, skip_layers)
    "flux_single": ("flux", {"single_transformer_blocks": [1]}),
    "flux_double_and_single": ("flux", {"transformer_blocks": [1], "single_transformer_blocks": [0, 2]}),
    "ltx": ("ltx", [1]),
    "hunyuan_video_double": ("hunyuan_video", [1]),
    "hunyuan_video_double_and_single": ("hunyuan_video", {"transformer_blocks": [0], "single_transformer_blocks": [1]}),
    "cogvideox": ("cogvideox", [1]),
    "mochi": ("mochi", [1]),
}


def without_blocks(model, skip_layers):
    """An independent weak model: a copy whose block lists lack the skipped blocks."""
    by_list = skip_layers if isinstance(skip_layers, dict) else {"transformer_blocks": skip_layers}
    pruned = copy.deepcopy(model)
    for name, skipped in by_list.items():
        setattr(pruned, name, nn.ModuleList(b for k, b in enumerate(getattr(model, name)) if k not in skipped))
    return pruned


def assert_no_hooks(model):
    """No call or forward override is left on the denoiser or any of its submodules."""
    assert not is_armed(model)
    assert [name for name, m in model.named_modules() if {"forward", "_call_impl"} & m.__dict__.keys()] == []


def call(model, x, t, fixed, text):
    return model(hidden_states=x, timestep=t.expand(len(x)), **fixed, **text, return_dict=False)[0]


@pytest.mark.parametrize("case", SKIPS)
@torch.no_grad()
def test_a_skipped_block_equals_the_network_without_it(case):
    family, skip_layers = SKIPS[case]
    model, x, fixed, cond, _ = tiny(family)
    t = torch.tensor([700.0])
    expected = call(without_blocks(model, skip_layers), x, t, fixed, cond)
    arm_weak_pass(model, skip_layers=skip_layers)
    torch.testing.assert_close(call(model, x, t, fixed, cond), expected, rtol=0, atol=0)
    assert not torch.allclose(call(model, x, t, fixed, cond), expected)  # the blocks matter, so the skip is seen
    assert_no_hooks(model)


@torch.no_grad()
def guided_loop(guider, model, x, fixed, cond, uncond):
    """Euler steps on t = 1 .. 0, each driven through the guider as diffusers' modular denoise steps do:
    set_state, prepare_inputs, prepare_models / denoiser call / cleanup_models per batch, guider(...)."""
    ts = torch.linspace(1, 0, STEPS + 1)
    for i in range(STEPS):
        timestep = ts[i] * 1000
        guider.set_state(step=i, num_inference_steps=STEPS, timestep=timestep)
        batches = guider.prepare_inputs({name: (cond[name], uncond[name]) for name in cond})
        for batch in batches:
            guider.prepare_models(model)
            text = {name: getattr(batch, name) for name in cond}
            batch.noise_pred = call(model, x, timestep.reshape(1), fixed, text)
            guider.cleanup_models(model)
        x = x + (ts[i + 1] - ts[i]) * guider(batches)[0]
    return x


@torch.no_grad()
def transcribed_loop(model, weak, x, fixed, cond, uncond):
    """The same run written out: CFG above t = BOUNDARY, weak-model guidance at or below it."""
    ts = torch.linspace(1, 0, STEPS + 1)
    for i in range(STEPS):
        timestep = (ts[i] * 1000).reshape(1)
        v_cond = call(model, x, timestep, fixed, cond)
        if ts[i] > BOUNDARY:
            v_uncond = call(model, x, timestep, fixed, uncond)
            v = v_uncond + CFG * (v_cond - v_uncond)
        else:
            v_weak = call(weak, x, timestep, fixed, cond)
            v = v_weak + W * (v_cond - v_weak)
        x = x + (ts[i + 1] - ts[i]) * v
    return x


@pytest.mark.parametrize("case", SKIPS)
def test_every_family_runs_in_sgg_guider_as_transcribed(case):
    family, skip_layers = SKIPS[case]
    model, x, fixed, cond, uncond = tiny(family)
    guider = SGGGuider(GuidanceSchedule.sgg(CFG, W, BOUNDARY), skip_layers=skip_layers)
    evaluations = []
    handle = model.register_forward_pre_hook(lambda m, a, k: evaluations.append(len(k["hidden_states"])),
                                             with_kwargs=True)
    got = guided_loop(guider, model, x, fixed, cond, uncond)
    handle.remove()
    expected = transcribed_loop(model, without_blocks(model, skip_layers), x, fixed, cond, uncond)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    plan = guider.schedule.plan(torch.linspace(1, 0, STEPS + 1)[:-1])
    assert 0 < sum(plan.uncond) < STEPS and 0 < sum(plan.weak) < STEPS  # both segments are used
    assert sum(evaluations) == plan.evaluations_per_sample
    assert_no_hooks(model)


@pytest.mark.parametrize("case", SKIPS)
def test_hooks_are_removed_when_the_weak_pass_raises(case):
    family, skip_layers = SKIPS[case]
    model, x, fixed, cond, uncond = tiny(family)
    skipped = [model.transformer_blocks[k] for k in skip_layers] if isinstance(skip_layers, list) else \
        [getattr(model, name)[k] for name, ks in skip_layers.items() for k in ks]
    first = model.transformer_blocks[1 if skipped[0] is model.transformer_blocks[0] else 0]

    def fail_while_skipping(module, args, kwargs):  # this block runs in every pass; fail in the weak one
        if any("forward" in block.__dict__ for block in skipped):
            raise RuntimeError("boom in the weak pass")
    first.register_forward_pre_hook(fail_while_skipping, with_kwargs=True)
    with pytest.raises(RuntimeError, match="boom in the weak pass"):
        guided_loop(SGGGuider(GuidanceSchedule.autoguidance(2.0), skip_layers=skip_layers), model, x, fixed, cond,
                    uncond)
    assert_no_hooks(model)


def test_skip_layer_candidates_list_every_skippable_block_list():
    assert skip_layer_candidates(tiny("flux")[0]) == {"transformer_blocks": [0, 1],
                                                      "single_transformer_blocks": [0, 1, 2]}
    assert skip_layer_candidates(tiny("hunyuan_video")[0]) == {"transformer_blocks": [0, 1],
                                                               "single_transformer_blocks": [0, 1]}
    for family in ("ltx", "cogvideox", "mochi"):
        assert skip_layer_candidates(tiny(family)[0]) == {"transformer_blocks": [0, 1, 2]}, family


# Block counts of the checkpoints the presets were published for (their transformer configs).
PUBLISHED = {"SD3Transformer2DModel": dict(num_layers=24), "LTXVideoTransformer3DModel": dict(double=28),
             "HunyuanVideoTransformer3DModel": dict(double=20, single=40),
             "CogVideoXTransformer3DModel": dict(double=30), "MochiTransformer3DModel": dict(double=48)}
FAMILY_OF = {"LTXVideoTransformer3DModel": "ltx", "HunyuanVideoTransformer3DModel": "hunyuan_video",
             "CogVideoXTransformer3DModel": "cogvideox", "MochiTransformer3DModel": "mochi"}


def narrow(class_name, **sizes):
    """The transformer class at its published depth, 2 heads of 8 wide."""
    if class_name == "SD3Transformer2DModel":
        torch.manual_seed(0)
        return SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, out_channels=4, attention_head_dim=8,
                                     num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                     pooled_projection_dim=16, pos_embed_max_size=8, **sizes)
    return tiny(FAMILY_OF[class_name], **sizes)[0]


@pytest.mark.parametrize("class_name", sorted(SKIP_LAYER_PRESETS))
def test_each_preset_fits_the_architecture_it_was_published_for(class_name):
    preset = SKIP_LAYER_PRESETS[class_name]
    assert preset.source and preset.model and preset.scale > 0
    transformer = narrow(class_name, **PUBLISHED[class_name])
    assert skip_layer_preset(transformer) is preset
    guider = SGGGuider(GuidanceSchedule.autoguidance(1 + preset.scale), skip_layers=preset.skip_layers)
    guider.set_state(step=0, num_inference_steps=2, timestep=torch.tensor(900.0))
    guider.prepare_inputs({"x": torch.zeros(1)})
    guider.prepare_models(transformer)  # checks the blocks against this transformer
    guider.prepare_models(transformer)  # arms the weak pass on them
    guider.cleanup_models(transformer)
    assert_no_hooks(transformer)


def test_presets_refuse_a_transformer_too_shallow_and_are_absent_without_a_published_setting():
    with pytest.raises(ValueError, match=r"the published preset for MochiTransformer3DModel \(genmo/mochi-1-preview\) "
                                         r"does not fit this transformer: skip_layers: 34 is not a block index"):
        skip_layer_preset(tiny("mochi")[0])
    assert skip_layer_preset(tiny("flux")[0]) is None


def test_skip_layers_by_block_list_survive_save_and_load(tmp_path):
    skip = {"transformer_blocks": [7], "single_transformer_blocks": [7, 8, 9]}
    SGGGuider(GuidanceSchedule.sd3_paper(28), skip_layers=skip).save_pretrained(tmp_path)
    assert SGGGuider.from_pretrained(tmp_path).skip_layers == skip


def test_bad_skip_layers_are_refused_naming_the_block_list():
    flux = tiny("flux")[0]
    with pytest.raises(ValueError, match=r"has no block list 'single_blocks' \(its block lists: "
                                         r"\['transformer_blocks', 'single_transformer_blocks'\]\)"):
        arm_weak_pass(flux, skip_layers={"single_blocks": [0]})
    with pytest.raises(ValueError, match="3 is not a block index of FluxTransformer2DModel, which has 3 blocks in "
                                         "single_transformer_blocks"):
        arm_weak_pass(flux, skip_layers={"single_transformer_blocks": [3]})
    with pytest.raises(ValueError, match="skip_layers must be a non-empty list of block indices, or a dict"):
        SGGGuider(GuidanceSchedule.autoguidance(2.0), skip_layers={"transformer_blocks": []})
    assert_no_hooks(flux)


def test_unet_skip_layers_are_refused_with_the_reason():
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(4, 8), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=4, attention_head_dim=2)
    guider = SGGGuider(GuidanceSchedule.autoguidance(2.0), skip_layers=[0])
    guider.set_state(step=0, num_inference_steps=2, timestep=torch.tensor(900.0))
    with pytest.raises(ValueError, match=r"UNet2DConditionModel has none of the block lists .*\(a UNet: its blocks "
                                         r"change resolution and channels"):
        guider.prepare_models(unet)
    assert skip_layer_candidates(unet) == {}
