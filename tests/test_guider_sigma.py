"""One t convention: SGGGuider reads the scheduler's sigma, as the SD3 drop-in (FlowMatchGuidedStep) and
the sampler do, so a noise-level boundary set exactly at a sigma puts every step on the same side."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

from sgg_kernels import GuidanceSchedule  # noqa: E402
from sgg_kernels.integrations.diffusers_guider import SGGGuider  # noqa: E402
from sgg_kernels.integrations.diffusers_sd3 import FlowMatchGuidedStep  # noqa: E402


def guider_weights(guider, scheduler):
    rows = []
    for i, t in enumerate(scheduler.timesteps):
        guider.set_state(step=i, num_inference_steps=len(scheduler.timesteps), timestep=t)
        state = guider.get_state()
        rows.append((state["lam_cdg"], state["lam_cag"]))
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("make_scheduler", [
    lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3's: float32 timesteps = sigmas * 1000
    lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),  # Wan's
])
def test_boundary_at_each_sigma_puts_each_step_where_the_sd3_drop_in_does(make_scheduler):
    scheduler = make_scheduler()
    scheduler.set_timesteps(28)
    sigmas = scheduler.sigmas[:28].double()
    disagree = 0
    for boundary in sigmas.tolist():
        schedule = GuidanceSchedule.sgg(cfg_scale=4.0, cag_scale=2.0, boundary=boundary)
        got = guider_weights(SGGGuider(schedule, skip_layers=[0], scheduler=scheduler), scheduler)
        if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):  # the SD3 drop-in's own per-step weights
            expected = FlowMatchGuidedStep(scheduler, schedule, "cpu").tables.weights.double()
        else:  # t = the scheduler's sigma, as the drop-in and the sampler read it
            expected = schedule.weights(sigmas)
        disagree += int(not torch.equal(got, expected))
    assert disagree == 0


def test_a_timestep_the_scheduler_does_not_have_is_refused_naming_the_fix():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    guider = SGGGuider(GuidanceSchedule.sgg(cfg_scale=4.0, cag_scale=2.0, boundary=0.5), skip_layers=[0],
                       scheduler=scheduler)
    with pytest.raises(ValueError, match="step 2: timestep 123 is not one of the scheduler's timesteps.*"
                                         "scheduler=pipe.scheduler"):
        guider.set_state(step=1, num_inference_steps=4, timestep=torch.tensor(123.0))
