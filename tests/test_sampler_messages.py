"""sample() and timestep_grid() name the argument, step and branch behind a bad input."""
import re

import pytest
import torch

from sgg_kernels import GuidanceSchedule
from sgg_kernels.sampler import sample, timestep_grid


@pytest.mark.parametrize("shift", [1e300, 1e-300, 1e30])
def test_a_shift_that_breaks_the_sd3_grid_is_refused_by_name(shift):
    with pytest.raises(ValueError, match=re.escape(f"shift={shift!r} gives an SD3 grid that is not finite and strictly")):
        timestep_grid(4, "sd3", shift)


def test_moderate_shifts_still_give_a_grid():
    for shift in (0.05, 1.0, 3.0, 50.0):
        grid = timestep_grid(28, "sd3", shift)
        assert grid[0] == 1 and grid[-1] == 0 and bool((grid[1:] < grid[:-1]).all())


def test_null_cond_with_other_keys_than_cond_is_named():
    def model(x, t, cond):
        return x - cond["a"]
    cond, null = {"a": torch.ones(1, 2), "b": torch.ones(1, 2)}, {"a": torch.zeros(1, 2)}
    with pytest.raises(ValueError, match=r"null_cond shaped like cond.*keys \['a', 'b'\].*keys \['a'\]"):
        sample(model, cond, GuidanceSchedule.cfg(2.0), shape=(1, 2), null_cond=null, num_steps=2)


@pytest.mark.parametrize("batch", [True, False])
def test_a_prediction_on_another_device_names_the_step_and_branch(batch):
    def model(x, t, cond):
        return (x - cond).to("meta")
    branch = "batched cond\\+uncond" if batch else "cond"
    with pytest.raises(ValueError, match=rf"step 1/3 \(t=1, cdg\): the {branch} prediction is on meta but x is on cpu"):
        sample(model, torch.ones(1, 2), GuidanceSchedule.cfg(2.0), shape=(1, 2), null_cond=torch.zeros(1, 2),
               num_steps=3, batch_cond_uncond=batch)
