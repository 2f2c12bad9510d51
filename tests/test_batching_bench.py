"""The serving benchmark runs, and its hardware-independent figure holds: the engine evaluates exactly the
sum of the requests' own plans, and the union batch every pass for every row (timings are not asserted)."""
from benchmarks.batching_bench import SETTINGS, measure, table
from sgg_kernels.tables import GuidanceTables, timestep_grid


def test_evaluations_are_the_sum_of_the_plans_and_union_runs_every_pass():
    runs = {r.scheme: r for r in measure("mixed", 4, 0.0, max_rows=64, threads=1)}
    plans = sum(GuidanceTables.build(schedule, timestep_grid(steps, "sd3"), "cpu").evaluations_per_sample("euler")
                for schedule, steps in SETTINGS.values())
    assert plans == 56 + 56 + 20 + 100
    assert runs["engine"].evaluations == runs["one-at-a-time"].evaluations == runs["same-settings"].evaluations == plans
    assert runs["union"].evaluations == 3 * sum(steps for _, steps in SETTINGS.values())
    assert all(len(r.latencies) == 4 for r in runs.values())
    assert "| mixed | engine |" in table({"mixed": list(runs.values())})
