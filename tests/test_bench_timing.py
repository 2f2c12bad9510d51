"""How the benchmarks time a call (sgg_kernels.bench.timing, cases.py): the pieces that decide what a
ratio in the report means. Each test fails if its piece is undone: a malloc that returns 64 MB to the
kernel, providers that rotate through the input sets on their own, a pytest suite that reports other
times than the ones measured side by side, a guard that holds a run to a baseline of another method."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sgg_kernels.bench import cases, guard, results, timing

ROOT = Path(__file__).resolve().parents[1]

# Prints the resident memory, in MB, that freeing a written 64 MB tensor gave back to the system.
RETURNED_BY_FREEING_64MB = """
import sys, torch
from sgg_kernels.bench import timing
if sys.argv[1] == "keep":
    assert timing.keep_freed_memory()
def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
out = torch.empty(16 * 1024 * 1024)
out.fill_(1.0)
before = resident_mb()
del out
print(before - resident_mb())
"""


@pytest.mark.skipif(not timing.can_keep_freed_memory(), reason="glibc's malloc only")
def test_a_freed_64mb_output_stays_in_the_process_for_the_next_one():
    def returned_mb(mode):
        proc = subprocess.run([sys.executable, "-c", RETURNED_BY_FREEING_64MB, mode], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert proc.returncode == 0, proc.stderr
        return float(proc.stdout)

    assert returned_mb("default") > 60  # unmapped: the next 64 MB output faults in fresh pages
    assert returned_mb("keep") < 1


def test_the_providers_of_a_case_draw_one_rotation_over_the_input_sets():
    sets = [object() for _ in range(3)]
    seen = []
    providers = cases._sharing_rotation({"a": (lambda s: seen.append(("a", s)), None),
                                         "b": (lambda s: seen.append(("b", s)), "triton")}, sets)
    assert providers["b"].backend == "triton"
    for _ in range(3):
        providers["a"].fn()
        providers["b"].fn()
    # Each call takes the next set, whichever provider makes it: b never reads the set a just read.
    assert [s for _, s in seen] == sets + sets
    assert [name for name, _ in seen] == ["a", "b"] * 3


def test_the_providers_of_a_real_case_share_their_rotation():
    shape = (1, 16, 8, 8)
    case = cases.make_case("guided_step_", shape, cases.DTYPES["fp32"], "cpu")
    n = cases.input_set_count(5 * 4 * 16 * 8 * 8, "cpu")  # guided_step_ moves five fp32 operands
    assert n > 2
    # The `sgg torch` provider returns the x it wrote in place: the set it used.
    first = case.providers["sgg torch"].fn().data_ptr()
    for _ in range(n - 1):
        case.providers["sgg cpu"].fn()
    assert case.providers["sgg torch"].fn().data_ptr() == first  # n calls later, whoever made them
    assert case.providers["sgg torch"].fn().data_ptr() != first


def test_replayed_times_are_what_pytest_benchmark_reports(tmp_path):
    durations = [0.003, 0.001, 0.002, 0.004, 0.0025]
    (tmp_path / "test_replay.py").write_text(textwrap.dedent(f"""
        from sgg_kernels.bench import timing

        def test_replay(benchmark):
            benchmark._timer = timing.ReplayClock({durations!r})
            benchmark.pedantic(lambda: None, rounds={len(durations)})
    """))
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
                           f"--benchmark-json={out}"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads(out.read_text())["benchmarks"][0]["stats"]
    assert stats["rounds"] == len(durations)
    assert stats["data"] == pytest.approx(durations)
    assert stats["median"] == pytest.approx(0.0025) and stats["min"] == pytest.approx(0.001)


def test_interleaved_rounds_alternate_the_plans_and_divide_by_the_calls_per_round():
    order = []
    clock = iter(range(100)).__next__  # each reading one second after the last
    plans = [timing.Plan(lambda: order.append("a"), 3, 1, 1, clock),
             timing.Plan(lambda: order.append("b"), 2, 0, 2, clock)]
    times = timing.interleaved_times(plans)
    assert order == ["a", "a", "b", "a", "b", "a"]  # a's warm-up, then the rounds in turn
    assert times == [[1.0, 1.0, 1.0], [0.5, 0.5]]


def test_a_baseline_of_another_timing_method_is_reported_not_enforced(tmp_path, capsys):
    base = results.load(results.baseline_for("cpu-intel-r-xeon-r-processor-2cores"))
    assert base["machine"].get("method", 1) == 1
    run = json.loads(json.dumps(base))
    run["machine"]["method"] = timing.METHOD
    for r in run["rows"]:
        if r["provider"] == "sgg cpu":
            r["median_s"] *= 2.0  # a slowdown the same-method guard flags
    assert guard.compare(run["rows"], base["rows"], 0.3).regressions
    assert guard.check(run, 0.3) == 0
    out = capsys.readouterr().out
    assert "timed with another method: compared for information only" in out
    assert "not enforced: the baseline was timed with method 1 and this run with method 2" in out
    run["machine"]["method"] = 1
    assert guard.check(run, 0.3) == 1  # the same run against a baseline of its own method fails
