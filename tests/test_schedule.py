"""Schedules: per-step weights and evaluation plans against plain transcriptions of their definitions."""
import math

import pytest
import torch

from sgg_kernels import GuidanceSchedule, Segment

N = 28
T = torch.linspace(1, 0, N + 1)[:-1]  # each step's current t


def sd3_reference_loop(n, guidance_scale=4.5, cfg_guidance_start=1, cfg_guidance_end=14,
                       use_segmented_guidance=True, skip_layer_guidance_scale=3.0, skip_layer_guidance_start=15,
                       skip_layer_guidance_end=28, cfg_schedule="constant", cfg_d_w=0.0, slg_schedule="constant",
                       slg_d_w=0.0):
    """The official pipeline's rule (docs/schedules.md), as the coefficients of (v_c, v_u, v_skip) at each step."""
    def scale(kind, s, d_w, i, start, end):
        if kind == "constant":
            return s
        p = 0.0 if end == start else (i - start) / (end - start)
        return s + d_w * (1 - 2 * p)

    rows = []
    for i in range(1, n + 1):
        c, u, skip = 1.0, 0.0, 0.0
        if guidance_scale > 1 and cfg_guidance_start <= i <= cfg_guidance_end:
            s = scale(cfg_schedule, guidance_scale, cfg_d_w, i, cfg_guidance_start, cfg_guidance_end)
            c, u = s, 1 - s  # v = v_u + s (v_c - v_u)
        if use_segmented_guidance and skip_layer_guidance_start <= i <= skip_layer_guidance_end:
            s = scale(slg_schedule, skip_layer_guidance_scale, slg_d_w, i, skip_layer_guidance_start,
                      skip_layer_guidance_end)
            c, skip = c + s, skip - s  # + s (v_c - v_skip)
        rows.append((c, u, skip))
    return torch.tensor(rows, dtype=torch.float64)


def as_coefficients(weights):
    lam = weights.double()
    return torch.stack([1 + lam[:, 0] + lam[:, 1], -lam[:, 0], -lam[:, 1]], dim=1)


SD3_CASES = {
    "paper settings": {},
    "overlapping ranges": dict(cfg_guidance_end=20, skip_layer_guidance_start=10),
    "linear d_w": dict(cfg_schedule="linear", cfg_d_w=1.5, slg_schedule="linear", slg_d_w=0.5),
    "guidance_scale 1": dict(guidance_scale=1.0),
    "one-step linear range": dict(cfg_guidance_start=5, cfg_guidance_end=5, cfg_schedule="linear", cfg_d_w=1.0),
    "no segmented guidance": dict(use_segmented_guidance=False, cfg_guidance_end=28),
}


@pytest.mark.parametrize("case", list(SD3_CASES))
def test_from_sd3_args_reproduces_the_reference_loop(case):
    kwargs = SD3_CASES[case]
    weights = GuidanceSchedule.from_sd3_args(N, **kwargs).weights(T)
    torch.testing.assert_close(as_coefficients(weights), sd3_reference_loop(N, **kwargs), rtol=1e-6, atol=1e-6)


def test_sd3_plan_needs_56_evaluations_per_sample():
    plan = GuidanceSchedule.from_sd3_args().plan(T)
    assert plan.uncond == (True,) * 14 + (False,) * 14 and plan.weak == (False,) * 14 + (True,) * 14
    assert plan.evaluations_per_sample == 56  # the reference pipeline runs 70: uncond at every step


def test_t_indexed_constructors():
    t = torch.tensor([1.0, 0.9, 0.75, 0.5, 0.25, 0.0])
    sgg = GuidanceSchedule.sgg(cfg_scale=4.5, cag_scale=2.0, boundary=0.75).weights(t)
    assert sgg.tolist() == [[3.5, 0.0], [3.5, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    interval = GuidanceSchedule.interval(3.0, t_lo=0.25, t_hi=0.9).weights(t)
    assert interval[:, 0].tolist() == [0.0, 2.0, 2.0, 2.0, 0.0, 0.0] and not interval[:, 1].any()
    both = (GuidanceSchedule.cfg(2.0) + GuidanceSchedule.autoguidance(1.5)).weights(t)
    assert both.tolist() == [[1.0, 0.5]] * 6
    assert GuidanceSchedule().weights(t).abs().sum() == 0


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_shaped_t_segment_runs_from_lam_plus_d_w_to_lam_minus_d_w(shape):
    t = torch.linspace(0.8, 0.2, 7)
    lam = GuidanceSchedule((Segment("cag", 2.0, 0.2, 0.8, shape=shape, d_w=0.5),)).weights(t)[:, 1].double()
    p = (0.8 - t.double()) / 0.6
    expected = 2.0 + 0.5 * ((1 - 2 * p) if shape == "linear" else torch.cos(math.pi * p))
    expected[-1] = 0.0  # t = 0.2 = lo is outside the half-open interval (lo, hi]
    torch.testing.assert_close(lam, expected, rtol=1e-6, atol=1e-6)


BAD_SEGMENTS = {
    "kind": (dict(kind="cfg"), "Segment.kind"),
    "outside [0, 1]": (dict(hi=1.5), r"outside \[0, 1\]"),
    "start after end": (dict(lo=0.8, hi=0.2), "lo=0.8 > hi=0.2"),
    "nan strength": (dict(lam=float("nan")), "Segment.lam must be finite"),
    "negative d_w": (dict(d_w=-1.0), "d_w must be >= 0"),
    "scale below 0": (dict(lam=-2.0), "extrapolates past the weak prediction"),
    "fractional step": (dict(unit="step", lo=1.5, hi=3), "whole steps"),
    # Strengths are float32 in the ops: finite in float64 is not enough.
    "strength beyond float32": (dict(lam=1e39), r"Segment.lam=1e\+39 is beyond float32"),
    "shaped peak beyond float32": (dict(lam=3e38, shape="linear", d_w=1e38), r"lam \+ d_w = 4e\+38 is beyond float32"),
    "boolean strength": (dict(lam=True), "Segment.lam must be a real number, got True"),
}


@pytest.mark.parametrize("case", list(BAD_SEGMENTS))
def test_bad_segment_is_refused(case):
    change, message = BAD_SEGMENTS[case]
    with pytest.raises(ValueError, match=message):
        Segment(**{**dict(kind="cdg", lam=1.0, lo=0.0, hi=1.0), **change})


@pytest.mark.parametrize("kwargs,message", [
    (dict(cfg_guidance_end=30), r"cfg_guidance_end must be a step index in \[1, 28\]"),
    (dict(skip_layer_guidance_start=20, skip_layer_guidance_end=18), "skip_layer_guidance_start=20 is after"),
    (dict(skip_layer_guidance_scale=-1.0), "skip_layer_guidance_scale must be"),
    (dict(cfg_schedule="exp"), "cfg_schedule must be one of"),
    (dict(slg_schedule="linear", slg_d_w=float("inf")), "slg_d_w must be"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(num_inference_steps=True), "num_inference_steps must be a positive int, got True"),
    (dict(cfg_guidance_start=True), r"cfg_guidance_start must be a step index in \[1, 28\], got True"),
])
def test_bad_sd3_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GuidanceSchedule.from_sd3_args(**kwargs)


def test_schedule_that_does_not_fit_the_grid_is_refused():
    with pytest.raises(ValueError, match="ends at step 28 but the grid has 20 steps"):
        GuidanceSchedule.from_sd3_args().weights(torch.linspace(1, 0.05, 20))


@pytest.mark.parametrize("bad,message", [
    (torch.tensor([[1.0, 0.5]]), "must be 1-D"), (torch.tensor([1.0, float("nan")]), "finite"),
    (torch.tensor([1.5, 0.5]), r"in \[0, 1\]"),
])
def test_bad_timesteps_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        GuidanceSchedule.cfg(2.0).weights(bad)


@pytest.mark.parametrize("name,call", [
    ("scale", lambda: GuidanceSchedule.cfg(float("inf"))), ("w", lambda: GuidanceSchedule.autoguidance(-0.5)),
    ("cfg_scale", lambda: GuidanceSchedule.sgg(-1.0, 2.0, 0.5)), ("boundary", lambda: GuidanceSchedule.sgg(2, 2, 1.5)),
    ("scale", lambda: GuidanceSchedule.cfg(1e39)), ("w", lambda: GuidanceSchedule.autoguidance(1e39)),
    ("cag_scale", lambda: GuidanceSchedule.sgg(2.0, 1e39, 0.5)),
    ("guidance_scale", lambda: GuidanceSchedule.from_sd3_args(guidance_scale=1e39)),
])
def test_bad_constructor_argument_is_named(name, call):
    with pytest.raises(ValueError, match=name):
        call()


def test_overlapping_segments_whose_sum_leaves_float32_are_refused():
    big = Segment("cdg", 3e38, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"at step 2 \(t=0.5\) the overlapping cdg segments sum to lam_cdg = 6e\+38, "
                                         r"beyond float32.*lam=3e\+38, lo=0.0, hi=1.0.*lam=3e\+38, lo=0.0, hi=0.5"):
        GuidanceSchedule((big, Segment("cdg", 3e38, 0.0, 0.5))).weights([1.0, 0.5])
    # The same strengths on separate columns, or in disjoint intervals, stay in range and are kept.
    both_kinds = GuidanceSchedule((big, Segment("cag", 3e38, 0.0, 1.0))).weights([1.0, 0.5])
    assert torch.equal(both_kinds, torch.full((2, 2), 3e38))
    disjoint = GuidanceSchedule((Segment("cdg", 3e38, 0.5, 1.0), Segment("cdg", 3e38, 0.0, 0.5)))
    assert torch.equal(disjoint.weights([1.0, 0.5])[:, 0], torch.full((2,), 3e38))


@pytest.mark.parametrize("segments", ["abc", Segment("cdg", 1.0, 0.0, 1.0), (Segment("cdg", 1.0, 0.0, 1.0), 2.0)])
def test_schedule_of_something_other_than_segments_is_refused(segments):
    with pytest.raises(TypeError, match="GuidanceSchedule.segments must be a tuple of Segment"):
        GuidanceSchedule(segments)


def test_schedule_from_a_list_of_segments_equals_the_tuple_form():
    seg = Segment("cag", 1.0, 0.0, 1.0)
    from_list = GuidanceSchedule([seg])
    assert from_list == GuidanceSchedule((seg,)) and hash(from_list) == hash(GuidanceSchedule((seg,)))
