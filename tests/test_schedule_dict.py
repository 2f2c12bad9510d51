"""GuidanceSchedule's plain-dict form (what SGGGuider's config stores) and the sd3_paper preset."""
import json

import pytest
import torch

from sgg_kernels import GuidanceSchedule, Segment


@pytest.mark.parametrize("schedule", [
    GuidanceSchedule(),
    GuidanceSchedule.cfg(4.5),
    GuidanceSchedule.sgg(4.5, 2.0, 0.75) + GuidanceSchedule.interval(2.0, 0.2, 0.8),
    GuidanceSchedule.from_sd3_args(20, 4.5, 2, 12, True, 3.0, 9, 20, "linear", 1.0, "cosine", 0.5),
], ids=["empty", "cfg", "sgg+interval", "sd3-shapes"])
def test_dict_round_trip_through_json(schedule):
    again = GuidanceSchedule.from_dict(json.loads(json.dumps(schedule.to_dict())))
    assert again == schedule
    t = torch.linspace(1, 0, 21)[:-1]
    assert torch.equal(again.weights(t), schedule.weights(t))


def test_from_dict_checks_its_input():
    with pytest.raises(ValueError, match="needs a 'segments' list"):
        GuidanceSchedule.from_dict({"segment": []})
    with pytest.raises(ValueError, match="keys from"):
        GuidanceSchedule.from_dict({"segments": [{"kind": "cdg", "lam": 1.0, "lo": 0, "hi": 1, "scale": 2}]})
    with pytest.raises(ValueError, match="Segment.kind must be one of"):  # each segment is validated as built
        GuidanceSchedule.from_dict({"segments": [{"kind": "cfg", "lam": 1.0, "lo": 0.0, "hi": 1.0}]})


@pytest.mark.parametrize("steps", [28, 29, 2])
def test_sd3_paper_is_cfg_then_skip_layer_guidance(steps):
    half = steps // 2
    schedule = GuidanceSchedule.sd3_paper(steps)
    assert schedule.segments == (Segment("cdg", 3.5, 1, half, "step"), Segment("cag", 3.0, half + 1, steps, "step"))
    plan = schedule.plan(torch.zeros(steps))
    assert plan.evaluations_per_sample == 2 * steps  # one extra pass per step: uncond, then the skip-layer one
    with pytest.raises(ValueError, match="num_inference_steps must be an int >= 2"):
        GuidanceSchedule.sd3_paper(1)
