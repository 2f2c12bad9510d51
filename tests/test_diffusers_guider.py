"""SGGGuider in diffusers' modular pipelines (SD3 with skip layers, Wan with skip layers, QwenImage with
a separate weak model), on tiny random components built offline, against transcriptions of the same
guidance loops; plus the built-in guiders' behaviour on SGG's settings, pinned."""
import copy
import inspect

import pytest
import torch
from torch import nn

diffusers = pytest.importorskip("diffusers")
from diffusers import (Flux2Transformer2DModel, FlowMatchEulerDiscreteScheduler,  # noqa: E402
                       FluxTransformer2DModel, QwenImageTransformer2DModel, UniPCMultistepScheduler,
                       WanTransformer3DModel)
from diffusers.guiders import AutoGuidance, SkipLayerGuidance  # noqa: E402
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput  # noqa: E402
from diffusers.hooks import LayerSkipConfig  # noqa: E402
from diffusers.modular_pipelines.qwenimage.modular_blocks_qwenimage import QwenImageCoreDenoiseStep  # noqa: E402
from diffusers.modular_pipelines.stable_diffusion_3.modular_blocks_stable_diffusion_3 import (  # noqa: E402
    StableDiffusion3T2ICoreDenoiseStep)
from diffusers.modular_pipelines.wan.modular_blocks_wan import WanCoreDenoiseStep  # noqa: E402
from diffusers_tiny import (SIZE, CountSamples, initial_latents, reference_sgg, sd3_embeds,  # noqa: E402
                            tiny_sd3_transformer)

from sgg_kernels import GuidanceSchedule  # noqa: E402
from sgg_kernels.integrations.diffusers_guider import SGGGuider  # noqa: E402
from sgg_kernels.integrations.weak_pass import arm_weak_pass, is_armed  # noqa: E402

SGG_SD3_ARGS = dict(guidance_scale=4.5, cfg_guidance_start=1, cfg_guidance_end=14, use_segmented_guidance=True,
                    skip_guidance_layers=[7, 8, 9], skip_layer_guidance_scale=3.0, skip_layer_guidance_start=15,
                    skip_layer_guidance_end=28)


pytestmark = pytest.mark.usefixtures("one_thread")


def modular(blocks, **components):
    pipe = blocks.init_pipeline()
    pipe.update_components(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_no_hooks(model):
    """No forward override is left on the denoiser or any of its submodules."""
    assert not is_armed(model)
    assert [name for name, m in model.named_modules() if "forward" in m.__dict__] == []


class ReferenceGuider(BaseGuidance):
    """The plain loop, as the official pipelines run it: cond, uncond and weak at every step, combined
    in the published forms; the weak pass swaps in `weak` (a module) for that one call."""

    _input_predictions = ["pred_cond", "pred_uncond", "pred_weak"]

    def __init__(self, scales, weak):
        super().__init__()
        self.scales, self.weak = scales, weak  # scales(step, t) -> (cfg scale or None, weak scale or None)
        self.register_to_config()  # modular pipelines read a component's config

    def prepare_inputs(self, data):
        return [self._prepare_batch(data, k, name) for k, name in zip((0, 1, 0), self._input_predictions)]

    def prepare_inputs_from_block_state(self, data, fields):
        return [self._prepare_batch_from_block_state(fields, data, k, name)
                for k, name in zip((0, 1, 0), self._input_predictions)]

    def prepare_models(self, denoiser):
        self._count_prepared += 1
        if self._count_prepared == 3:
            denoiser.forward = self.weak.forward

    def cleanup_models(self, denoiser):
        denoiser.__dict__.pop("forward", None)

    @property
    def num_conditions(self):
        return 3

    def forward(self, pred_cond, pred_uncond, pred_weak):
        cfg, w = self.scales(self._step, float(self._timestep) / 1000)
        if cfg is not None and w is not None:
            pred = pred_cond + (cfg - 1) * (pred_cond - pred_uncond) + (w - 1) * (pred_cond - pred_weak)
        elif cfg is not None:
            pred = pred_uncond + cfg * (pred_cond - pred_uncond)
        elif w is not None:
            pred = pred_weak + w * (pred_cond - pred_weak)
        else:
            pred = pred_cond
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)


def without_blocks(model, skipped, blocks="blocks"):
    """An independent weak model: a copy of `model` whose block list lacks the skipped blocks."""
    pruned = copy.deepcopy(model)
    setattr(pruned, blocks, nn.ModuleList(b for k, b in enumerate(getattr(model, blocks)) if k not in skipped))
    return pruned


# SD3: the official SGG loop, 70 against 56 sample-evaluations per image at the paper's settings.
@pytest.fixture(scope="module")
def sd3():
    return modular(StableDiffusion3T2ICoreDenoiseStep(), transformer=tiny_sd3_transformer(),
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def run_sd3(pipe, latents, steps=28, **kw):
    return pipe(**sd3_embeds(), latents=latents, num_inference_steps=steps, height=SIZE, width=SIZE,
                output="latents", **kw)


def test_sd3_equals_official_loop_with_the_plans_evaluations(sd3):
    schedule = GuidanceSchedule.sd3_paper(28)
    sd3.update_components(guider=SGGGuider(schedule, skip_layers=[7, 8, 9]))
    latents = initial_latents()
    with CountSamples(sd3.transformer) as official:
        expected = reference_sgg(sd3.transformer, sd3.scheduler.config, 28, latents, sd3_embeds(), **SGG_SD3_ARGS)
    with CountSamples(sd3.transformer) as ours:
        got = run_sd3(sd3, latents)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    plan = schedule.plan(torch.zeros(28))
    assert (official.samples, ours.samples) == (2 * 70, 2 * 56) and ours.samples == 2 * plan.evaluations_per_sample
    assert_no_hooks(sd3.transformer)


def test_sd3_hooks_are_removed_when_the_weak_pass_raises(sd3):
    sd3.update_components(guider=SGGGuider(GuidanceSchedule.sd3_paper(6), skip_layers=[8]))
    latents = initial_latents(seed=2)
    clean = run_sd3(sd3, latents, steps=6)

    def fail_while_skipping(module, args):  # block 0 runs in every pass; fail in the weak one
        if "forward" in sd3.transformer.transformer_blocks[8].__dict__:
            raise RuntimeError("boom in the weak pass")
    handle = sd3.transformer.transformer_blocks[0].register_forward_pre_hook(fail_while_skipping)
    try:
        with pytest.raises(RuntimeError, match="boom in the weak pass"):
            run_sd3(sd3, latents, steps=6)
    finally:
        handle.remove()
    assert_no_hooks(sd3.transformer)
    assert torch.equal(run_sd3(sd3, latents, steps=6), clean)  # and the guider runs again as before


# Wan: video DiT, skip-layer weak pass, a noise-level schedule (t = timestep / 1000).
def tiny_wan():
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=16, num_layers=4,
                                 rope_max_seq_len=32).eval()


def run_wan(guider, transformer, steps=8):
    g = torch.Generator().manual_seed(1)
    embeds = dict(prompt_embeds=torch.randn(1, 5, 16, generator=g),
                  negative_prompt_embeds=torch.randn(1, 5, 16, generator=g))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = modular(WanCoreDenoiseStep(), transformer=transformer, scheduler=scheduler, guider=guider)
    return pipe(**embeds, latents=torch.randn(1, 4, 2, 4, 4, generator=g), num_inference_steps=steps, output="latents")


def test_wan_skip_layers_equal_reference_loop():
    wan, skipped, boundary = tiny_wan(), [1], 0.6
    guider = SGGGuider(GuidanceSchedule.sgg(cfg_scale=5.0, cag_scale=2.0, boundary=boundary), skip_layers=skipped)
    reference = ReferenceGuider(lambda i, t: (5.0, None) if t > boundary else (None, 2.0), without_blocks(wan, skipped))
    with CountSamples(wan) as counted:
        got = run_wan(guider, wan)
    expected = run_wan(reference, wan)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    ts = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    ts.set_timesteps(8)
    plan = guider.schedule.plan(ts.timesteps.double() / 1000)
    assert 0 < sum(plan.uncond) < 8 and 0 < sum(plan.weak) < 8  # both segments are used
    assert counted.samples == plan.evaluations_per_sample == 16
    assert_no_hooks(wan)


def test_wan_hooks_are_removed_when_the_weak_pass_raises():
    wan = tiny_wan()

    def fail_while_skipping(module, args):  # block 0 runs in every pass; fail in the weak one
        if "forward" in wan.blocks[1].__dict__:
            raise RuntimeError("boom in the weak pass")
    wan.blocks[0].register_forward_pre_hook(fail_while_skipping)
    with pytest.raises(RuntimeError, match="boom in the weak pass"):
        run_wan(SGGGuider(GuidanceSchedule.autoguidance(2.0), skip_layers=[1]), wan, steps=2)
    assert_no_hooks(wan)


# QwenImage: a separate weak model (true AutoGuidance), step segments that overlap.
def tiny_qwen(layers, seed):
    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=layers,
                                       attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                       axes_dims_rope=(2, 2, 4)).eval()


def run_qwen(guider, transformer, steps=6):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(1, 5, dtype=torch.long)
    pipe = modular(QwenImageCoreDenoiseStep(), transformer=transformer, guider=guider,
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    return pipe(prompt_embeds=torch.randn(1, 5, 16, generator=g),
                negative_prompt_embeds=torch.randn(1, 5, 16, generator=g),
                prompt_embeds_mask=mask, negative_prompt_embeds_mask=mask, num_inference_steps=steps, height=32,
                width=32, generator=g, output="latents")


def test_qwen_weak_model_equals_reference_loop():
    strong, weak = tiny_qwen(3, seed=0), tiny_qwen(1, seed=1)
    # CFG 4.0 on steps 1..4; weak-model guidance +1.5 (c - weak) on steps 3..6: both on steps 3 and 4.
    schedule = GuidanceSchedule.from_sd3_args(6, guidance_scale=4.0, cfg_guidance_start=1, cfg_guidance_end=4,
                                              skip_layer_guidance_scale=1.5, skip_layer_guidance_start=3,
                                              skip_layer_guidance_end=6)
    reference = ReferenceGuider(lambda i, t: (4.0 if i < 4 else None, 2.5 if i >= 2 else None), weak)
    with CountSamples(strong) as counted_strong, CountSamples(weak) as counted_weak:
        got = run_qwen(SGGGuider(schedule, weak_model=weak), strong)
    expected = run_qwen(reference, strong)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    plan = schedule.plan(torch.zeros(6))
    # every pass goes through the pipeline's transformer call; the weak ones reach the weak model
    assert (counted_strong.samples, counted_weak.samples) == (plan.evaluations_per_sample, sum(plan.weak)) == (14, 4)
    assert_no_hooks(strong)


def test_weak_model_that_raises_leaves_no_hook():
    strong = tiny_qwen(1, seed=0)

    def broken(**kwargs):
        raise RuntimeError("weak model failed")
    with pytest.raises(RuntimeError, match="weak model failed"):
        run_qwen(SGGGuider(GuidanceSchedule.autoguidance(2.0), weak_model=broken), strong, steps=2)
    assert_no_hooks(strong)


# Double-stream blocks of the other families: a skipped block passes its inputs through, in order.
def double_stream_case(family):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 5, 16, generator=g)
    if family == "flux":
        model = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=3, num_single_layers=1,
                                       attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                       pooled_projection_dim=16, axes_dims_rope=(2, 2, 4))
        inputs = dict(hidden_states=torch.randn(1, 4, 4, generator=g), encoder_hidden_states=text,
                      pooled_projections=torch.randn(1, 16, generator=g), img_ids=torch.zeros(4, 3),
                      txt_ids=torch.zeros(5, 3))
    elif family == "flux2":
        model = Flux2Transformer2DModel(patch_size=1, in_channels=4, num_layers=3, num_single_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                        axes_dims_rope=(2, 2, 2, 2))
        inputs = dict(hidden_states=torch.randn(1, 4, 4, generator=g), encoder_hidden_states=text,
                      img_ids=torch.zeros(1, 4, 4), txt_ids=torch.zeros(1, 5, 4))
    else:
        model = tiny_qwen(3, seed=0)
        inputs = dict(hidden_states=torch.randn(1, 4, 16, generator=g), encoder_hidden_states=text,
                      encoder_hidden_states_mask=torch.ones(1, 5, dtype=torch.long), img_shapes=[(1, 2, 2)])
    return model.eval(), dict(inputs, timestep=torch.tensor([0.5]), return_dict=False)


@pytest.mark.parametrize("family", ["flux", "flux2", "qwenimage"])
@torch.no_grad()
def test_skipped_double_stream_block_equals_the_network_without_it(family):
    model, inputs = double_stream_case(family)
    expected = without_blocks(model, [1], "transformer_blocks")(**inputs)[0]
    full = model(**inputs)[0]
    arm_weak_pass(model, skip_layers=[1])
    torch.testing.assert_close(model(**inputs)[0], expected, rtol=0, atol=0)
    assert not torch.allclose(full, expected)  # the block matters, so the skip is seen
    assert_no_hooks(model)


def test_a_weak_pass_whose_call_never_came_is_removed_at_the_next_step():
    wan = tiny_wan()
    guider = SGGGuider(GuidanceSchedule.autoguidance(2.0), skip_layers=[1])
    guider.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(900.0))
    batches = guider.prepare_inputs({"x": torch.zeros(1)})
    assert [b.__guidance_identifier__ for b in batches] == ["pred_cond", "pred_weak"]
    guider.prepare_models(wan)
    guider.prepare_models(wan)  # the weak pass is armed; say the pipeline fails before calling the model
    assert is_armed(wan)
    guider.set_state(step=1, num_inference_steps=4, timestep=torch.tensor(700.0))
    assert_no_hooks(wan)


# Config round trip and bad settings.
def test_save_and_load_keep_the_schedule(tmp_path):
    schedule = GuidanceSchedule.sgg(4.5, 2.0, 0.7) + GuidanceSchedule.from_sd3_args(
        10, 1.0, 1, 1, True, 1.5, 2, 9, slg_schedule="linear", slg_d_w=0.5)
    SGGGuider(schedule, skip_layers=[7, 8, 9]).save_pretrained(tmp_path / "skip")
    loaded = SGGGuider.from_pretrained(tmp_path / "skip")
    assert loaded.schedule == schedule and loaded.skip_layers == [7, 8, 9]
    weak = nn.Identity()
    SGGGuider(schedule, weak_model=weak).save_pretrained(tmp_path / "weak")
    assert SGGGuider.from_pretrained(tmp_path / "weak", weak_model=weak).weak_model is weak
    assert SGGGuider(schedule, weak_model=weak).new().weak_model is weak  # diffusers' copy keeps it too
    with pytest.raises(ValueError, match="needs skip_layers .* or weak_model"):
        SGGGuider.from_pretrained(tmp_path / "weak")  # the weak model is not in the config


def test_bad_settings_raise_before_the_first_evaluation(sd3):
    with pytest.raises(ValueError, match="needs skip_layers .* or weak_model"):
        SGGGuider(GuidanceSchedule.sd3_paper(28))
    with pytest.raises(ValueError, match="not both"):
        SGGGuider(GuidanceSchedule.sd3_paper(28), skip_layers=[1], weak_model=nn.Identity())
    cases = [(SGGGuider(GuidanceSchedule.sd3_paper(28), skip_layers=[7, 10]), {},
              r"skip_layers: 10 is not a block index of SD3Transformer2DModel, which has 10 blocks"),
             (SGGGuider(GuidanceSchedule.sd3_paper(28), skip_layers=[7]), dict(steps=20),
              "does not fit a run of 20 steps: .* ends at step 28"),
             (SGGGuider(GuidanceSchedule.cfg(4.5)), dict(negative=False), "gave no negative inputs")]
    for guider, kw, message in cases:
        sd3.update_components(guider=guider)
        embeds = sd3_embeds()
        if kw.get("negative", True) is False:
            embeds = {k: v for k, v in embeds.items() if not k.startswith("negative")}
        with CountSamples(sd3.transformer) as counted, pytest.raises(ValueError, match=message):
            sd3(**embeds, latents=initial_latents(), num_inference_steps=kw.get("steps", 28), height=SIZE,
                width=SIZE, output="latents")
        assert counted.samples == 0


# The built-in guiders on SGG's settings (pinned, so the table in docs/diffusers.md stays true).
def builtin_slg_passes(guidance_scale, transformer):
    """One step of SkipLayerGuidance: the guider, its batches for inputs (cond, negative), the negative
    input, and whether each pass had diffusers hooks on any submodule of the transformer."""
    slg = SkipLayerGuidance(guidance_scale=guidance_scale, skip_layer_guidance_scale=2.8, skip_layer_guidance_start=0.0,
                            skip_layer_guidance_stop=1.0,
                            skip_layer_config=LayerSkipConfig([8], fqn="transformer_blocks"))
    slg.set_state(step=5, num_inference_steps=10, timestep=torch.tensor(500.0))
    negative = torch.randn(2, 3)
    batches = slg.prepare_inputs({"x": (torch.randn(2, 3), negative)})
    hooked = []
    for _ in batches:
        slg.prepare_models(transformer)
        hooked.append(any(getattr(m, "_diffusers_hook", None) is not None and bool(m._diffusers_hook.hooks)
                          for m in transformer.modules()))
        slg.cleanup_models(transformer)
    return slg, batches, negative, hooked


def test_builtin_skip_layer_guidance_with_cfg_off_computes_cfg_on_the_negative_inputs(sd3):
    hooked = builtin_slg_passes(4.5, sd3.transformer)[-1]  # CFG on: the third pass skips block 8
    assert hooked == [False, False, True]
    slg, batches, negative, hooked = builtin_slg_passes(1.0, sd3.transformer)  # CFG off (SGG's low-noise segment)
    assert [b.__guidance_identifier__ for b in batches] == ["pred_cond", "pred_cond_skip"]
    # the "skip" pass runs on the negative inputs with no layer skipped ...
    assert batches[1].x is negative and hooked == [False, False]
    v_c, v_u = torch.randn(2, 3), torch.randn(2, 3)  # ... so it is CFG at the skip-layer scale
    torch.testing.assert_close(slg.forward(v_c, None, v_u).pred, v_u + 2.8 * (v_c - v_u))


def test_builtin_skip_layer_guidance_fails_on_sd3_joint_blocks(sd3):
    sd3.update_components(guider=SkipLayerGuidance(guidance_scale=4.5, skip_layer_guidance_layers=[7, 8, 9]))
    with pytest.raises(TypeError, match="object of type 'int' has no len"):
        run_sd3(sd3, initial_latents(), steps=10)
    for odd in ([8], [7, 8, 9]):
        sd3.update_components(guider=SkipLayerGuidance(
            guidance_scale=4.5, skip_layer_config=LayerSkipConfig(odd, fqn="transformer_blocks"),
            skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0))
        with pytest.raises(RuntimeError, match="is invalid for input of size"):  # its outputs come back swapped
            run_sd3(sd3, initial_latents(), steps=4)


def test_builtin_autoguidance_skips_layers_on_the_unconditional_inputs():
    assert "weak_model" not in inspect.signature(AutoGuidance.__init__).parameters
    ag = AutoGuidance(guidance_scale=2.0, auto_guidance_layers=[1], dropout=1.0)
    ag.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(900.0))
    cond, neg = torch.randn(2, 3), torch.randn(2, 3)
    batches = ag.prepare_inputs({"x": (cond, neg)})
    assert batches[1].x is neg  # its "weak" prediction is the unconditional one with layers skipped
