"""Random schedules: weights() and plan() against a brute-force, scalar reading of the definition."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sgg_kernels import GuidanceSchedule, Segment


def brute_force(segments, t_values):
    """Per step, per segment, straight from the Segment docstring, in plain Python floats."""
    rows = []
    n = len(t_values)
    for i, t in enumerate(t_values, start=1):
        lam = [0.0, 0.0]
        for s in segments:
            if s.unit == "step":
                if not s.lo <= i <= s.hi:
                    continue
                p = 0.0 if s.hi == s.lo else (i - s.lo) / (s.hi - s.lo)
            else:
                lo, hi = (float(torch.tensor(v, dtype=torch.float32)) for v in (s.lo, s.hi))
                if not ((t > lo or (lo == 0 and t == 0)) and t <= hi):
                    continue
                p = 0.0 if hi == lo else (hi - t) / (hi - lo)
            shape = {"constant": 0.0, "linear": 1 - 2 * p, "cosine": math.cos(math.pi * p)}[s.shape]
            lam[0 if s.kind == "cdg" else 1] += s.lam + s.d_w * shape
        rows.append(lam)
    assert n == len(rows)
    return rows


@st.composite
def schedules_and_grids(draw):
    n = draw(st.integers(1, 40))
    t = sorted(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)), reverse=True)
    segments = []
    for _ in range(draw(st.integers(0, 4))):
        unit = draw(st.sampled_from(["t", "step"]))
        if unit == "t":
            lo, hi = sorted(draw(st.lists(st.floats(0, 1, width=32), min_size=2, max_size=2)))
        else:
            lo, hi = sorted(draw(st.lists(st.integers(1, n), min_size=2, max_size=2)))
        shape = draw(st.sampled_from(["constant", "linear", "cosine"]))
        d_w = draw(st.floats(0, 2)) if shape != "constant" else 0.0
        lam = draw(st.floats(-1 + d_w, 8))
        segments.append(Segment(draw(st.sampled_from(["cdg", "cag"])), lam, lo, hi, unit, shape, d_w))
    return segments, t


@settings(max_examples=300, deadline=None)
@given(schedules_and_grids())
def test_weights_and_plan_match_the_definition(case):
    segments, t = case
    schedule = GuidanceSchedule(tuple(segments))
    timesteps = torch.tensor(t, dtype=torch.float32)
    got = schedule.weights(timesteps)
    expected = torch.tensor(brute_force(segments, timesteps.tolist()), dtype=torch.float64).reshape(-1, 2)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)
    plan = schedule.plan(timesteps)
    assert plan.uncond == tuple((got[:, 0] != 0).tolist()) and plan.weak == tuple((got[:, 1] != 0).tolist())
    assert plan.evaluations_per_sample == len(t) + sum(plan.uncond) + sum(plan.weak)
