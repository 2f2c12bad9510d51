"""The SD3 drop-in with a branch group of 2 CPU processes (gloo): both ranks end with the same latents,
equal to the single-process pipeline's, and the two ranks together run the plan's evaluations once."""
import datetime

import pytest
import torch
import torch.distributed as dist

from spawned_workers import free_port, spawn_and_wait

pytest.importorskip("diffusers")
pytestmark = [pytest.mark.multiprocess,
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="needs torch.distributed with gloo")]

TIMEOUT_S, STEPS = 120, 6
# CFG on steps 1..3, skip-layer guidance on 3..6: cond+uncond, cond+uncond+weak and cond+weak steps.
ARGS = dict(guidance_scale=4.5, cfg_guidance_start=1, cfg_guidance_end=3, use_segmented_guidance=True,
            skip_guidance_layers=[7, 8, 9], skip_layer_guidance_scale=3.0, skip_layer_guidance_start=3,
            skip_layer_guidance_end=STEPS)


def run_pipeline(branch_group=None):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from diffusers_tiny import SIZE, CountSamples, initial_latents, sd3_embeds, tiny_sd3_transformer
    from sgg_kernels.integrations.diffusers_sd3 import StableDiffusion3SGGPipeline

    pipe = StableDiffusion3Pipeline(transformer=tiny_sd3_transformer(), scheduler=FlowMatchEulerDiscreteScheduler(
        shift=3.0), vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        text_encoder_3=None, tokenizer_3=None)
    sgg = StableDiffusion3SGGPipeline(**pipe.components)
    sgg.set_progress_bar_config(disable=True)
    with CountSamples(sgg.transformer) as counted:
        latents = sgg(**sd3_embeds(), **ARGS, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                      latents=initial_latents(), output_type="latent", branch_group=branch_group).images
    return latents, counted.samples


def worker(rank, port, out_dir, tests_dir):
    import sys
    sys.path.insert(0, tests_dir)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        torch.save(run_pipeline(dist.group.WORLD), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.barrier()
        dist.destroy_process_group()


def test_branch_parallel_drop_in_equals_the_single_process_pipeline(tmp_path, request):
    tests_dir = str(request.path.parent)
    spawn_and_wait(worker, (free_port(), str(tmp_path), tests_dir), 2, 2 * TIMEOUT_S, "the 2-process SD3 run")
    (x0, n0), (x1, n1) = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    single, n_single = run_pipeline()
    assert torch.equal(x0, x1)  # identical on both ranks without a broadcast
    # The single process batches cond with uncond (a batch of 4, not 2), so equal up to GEMM rounding.
    torch.testing.assert_close(x0, single, rtol=1e-5, atol=1e-5)
    assert n0 + n1 == n_single  # each prediction evaluated once, on one of the ranks
    assert n0 > 0 and n1 > 0
