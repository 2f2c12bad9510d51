"""The regression guard on ratios (sgg_kernels.bench.guard), fed recorded results.

Most runs here are synthesised from the stored baseline, a real full CPU run: some providers' times are
scaled, and the guard must flag exactly the fused op that lost its standing, never a baseline, and
report a shift that all providers share without flagging it. tests/data/bench_guard holds three real
default runs of an unchanged build on the 2-core Xeon while other jobs loaded it (load average 5 to
7, 2026-12-06): replayed, they flag nothing, and with the op made 1.4x slower they are flagged.
"""
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgg_kernels.bench import guard, results
from sgg_kernels.bench.__main__ import main
from sgg_kernels.bench.table import e2e_lines

REAL_RUN = results.baseline_for("cpu-intel-r-xeon-r-processor-2cores")
BASELINES = ("eager chain", "torch.compile chain", "copy (same bytes)", "sgg torch")
UNCHANGED = sorted((Path(__file__).parent / "data" / "bench_guard").glob("unchanged_*.json"))


@pytest.fixture(scope="module")
def base():
    return results.load(REAL_RUN)


def scaled(data: dict, factors: dict, op: str | None = None, kind: str | None = None) -> dict:
    """A copy of a run with the times of the given providers (of one op, or all) times their factor."""
    out = json.loads(json.dumps(data))
    for r in out["rows"]:
        if r["provider"] in factors and op in (None, r["op"]):
            for key in ("median_s", "q1_s", "q3_s", "min_s", "max_s"):
                r[key] *= factors[r["provider"]]
    if kind:
        out["machine"]["kind"] = kind
    return out


def run_cli(tmp_path, run: dict, *args) -> int:
    path = tmp_path / "run.json"
    results.save(run, path)
    return main(["--results", str(path), *args])


def test_our_op_losing_standing_against_torch_compile_is_flagged_with_a_readable_verdict(base, tmp_path, capsys):
    run = scaled(base, {"sgg cpu": 1.5}, op="guided_step")  # our op 1.5x slower, everything else unchanged
    cmp = guard.compare(run["rows"], base["rows"], 0.3)
    flagged = {(m.provider, m.op, m.dtype, m.yardstick) for m in cmp.regressions}
    assert flagged == {("sgg cpu", "guided_step", dtype, yard)
                       for dtype in ("fp32", "bf16") for yard in ("torch.compile chain", "copy (same bytes)")}
    for m in cmp.regressions:
        assert m.slowdown == pytest.approx(0.5)  # 1.5x slower than the yardstick at every size
        assert m.change == pytest.approx(1 / 1.5 - 1)
        assert m.sizes == 5

    assert run_cli(tmp_path, run, "--baseline", str(REAL_RUN)) == 1
    out = capsys.readouterr().out
    verdict = out[out.index("Regression guard"):]
    assert "| sgg cpu | guided_step | fp32 | torch.compile chain |" in verdict
    assert "| -33% | 50% |" in verdict and "| 5 | REGRESSION |" in verdict
    assert "Verdict: REGRESSION, 4 of 20 groups slowed by more than allowed (30% or more)." in verdict
    assert len(verdict.splitlines()) < 15  # a short table, not a traceback


def test_only_the_baselines_moving_flags_nothing(base, tmp_path, capsys):
    # The figures from the incident that motivated the guard: torch.compile +46%, sgg torch +69%.
    run = scaled(base, {"torch.compile chain": 1.46, "sgg torch": 1.69, "eager chain": 1.2, "copy (same bytes)": 1.1})
    cmp = guard.compare(run["rows"], base["rows"], 0.3)
    assert cmp.regressions == []
    assert cmp.shifts["torch.compile chain"][0] == pytest.approx(1.46)
    assert cmp.shifts["sgg cpu"][0] == pytest.approx(1.0)
    assert run_cli(tmp_path, run, "--baseline", str(REAL_RUN)) == 0
    out = capsys.readouterr().out
    assert "torch.compile chain 1.46x" in out and "sgg torch 1.69x" in out
    assert "REGRESSION" not in out and "Verdict: no regression" in out


def test_a_shift_all_providers_share_is_reported_not_flagged(base):
    run = scaled(base, dict.fromkeys(("sgg cpu", *BASELINES), 1.6))
    cmp = guard.compare(run["rows"], base["rows"], 0.3)
    assert cmp.regressions == []
    assert all(m.change == pytest.approx(0) for m in cmp.movements)
    assert {p: round(s, 6) for p, (s, _) in cmp.shifts.items()} == dict.fromkeys(("sgg cpu", *BASELINES), 1.6)
    text, rc = guard.verdict(cmp, run["machine"], base["machine"])
    assert rc == 0 and "sgg cpu 1.60x" in text and "reported, not flagged" in text


def test_a_loss_within_the_threshold_is_not_flagged_and_the_threshold_is_respected(base):
    run = scaled(base, {"sgg cpu": 1.25}, op="w2s_loss")  # 25% slower
    assert guard.compare(run["rows"], base["rows"], 0.3).regressions == []
    assert len(guard.compare(run["rows"], base["rows"], 0.1).regressions) == 4


def test_one_noisy_size_does_not_flag_a_group(base):
    run = json.loads(json.dumps(base))
    for r in run["rows"]:
        if r["provider"] == "sgg cpu" and r["size"] == "64 MB":
            r["median_s"] *= 1.8  # one size of five, as when the load changes within a run
    cmp = guard.compare(run["rows"], base["rows"], 0.3)
    assert cmp.regressions == []
    worst = min(m.change for m in cmp.movements)
    assert worst == pytest.approx(math.exp(math.log(1 / 1.8) / 5) - 1)  # the geometric mean over the five sizes


def test_without_a_baseline_of_this_kind_it_says_so_and_exits_0(base, tmp_path, capsys):
    run = scaled(base, {"sgg cpu": 2.0}, kind="cpu-some-other-cpu-2cores")
    assert run_cli(tmp_path, run, "--compare") == 0
    out = capsys.readouterr().out
    assert "No baseline for this machine kind (cpu-some-other-cpu-2cores" in out
    assert "| op | size | dtype | provider | median ms |" in out  # the table is still printed
    assert "not enforced" in out  # compared with the other stored kind for information only


def test_bad_input_names_the_argument(base, tmp_path):
    with pytest.raises(ValueError, match="threshold"):
        guard.compare(base["rows"], base["rows"], 30)
    stray = tmp_path / "pytest-benchmark.json"
    stray.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(ValueError, match="not a result file"):
        results.load(stray)
    with pytest.raises(SystemExit):
        main(["--results", str(REAL_RUN), "--compare", "150"])


def test_the_e2e_table_states_the_ideal_and_the_share_reached():
    rows = [dict(way="reference loop", wall_s=2.5, nfe=70, model_s=2.49, other_s=0.01),
            dict(way="sgg drop-in", wall_s=2.5 / 1.15, nfe=56, model_s=2.1, other_s=0.07)]
    drop_in = e2e_lines(rows)[-2]
    # ideal 70/56 = 1.25x; share of the ideal gain (1.15 - 1) / (1.25 - 1) = 60%
    assert drop_in.endswith("| 1.15x | 1.25x | 60% |")


@pytest.mark.parametrize("now, then", list(itertools.permutations(range(len(UNCHANGED)), 2)))
def test_recorded_noisy_runs_of_an_unchanged_build_flag_nothing(now, then):
    # Before the copy was written at setup and the providers' rounds interleaved, such runs put one
    # op's standing 65% apart, and its standing against the copy 7x apart.
    run, other = results.load(UNCHANGED[now]), results.load(UNCHANGED[then])
    assert guard.compare(run["rows"], other["rows"], 0.3).regressions == []


@pytest.mark.parametrize("index", range(len(UNCHANGED)))
def test_recorded_noisy_runs_flag_nothing_against_the_stored_baseline(index, base):
    assert guard.compare(results.load(UNCHANGED[index])["rows"], base["rows"], 0.3).regressions == []


def test_a_real_40_percent_slowdown_in_recorded_noisy_runs_is_flagged(base):
    runs = [results.load(path) for path in UNCHANGED]
    flagged = 0
    pairs = [(run, other) for run in runs for other in [*runs, base] if other is not run]
    for run, other in pairs:
        cmp = guard.compare(scaled(run, {"sgg cpu": 1.4})["rows"], other["rows"], 0.3)
        flagged += bool(cmp.regressions)
        for m in cmp.regressions:  # only groups that slowed by more than their allowed margin
            assert m.slowdown > cmp.allowed(m) >= 0.3
        # A group escapes only where the runs' spread widened its margin past the slowdown.
        for m in cmp.movements:
            if m not in cmp.regressions:
                assert m.slowdown <= cmp.allowed(m)
    # Measured: 7 of the 9 comparisons flag; in the other two every group spread by 0.3 or more.
    assert flagged >= 7, f"{flagged} of {len(pairs)}"


def test_a_wide_spread_widens_the_margin_and_a_tight_one_keeps_the_threshold(base):
    run = scaled(base, {"sgg cpu": 1.4}, op="guide")
    quiet = json.loads(json.dumps(run))
    for r in quiet["rows"]:
        r["q1_s"] = r["q3_s"] = r["median_s"]
    tight_base = json.loads(json.dumps(base))
    for r in tight_base["rows"]:
        r["q1_s"] = r["q3_s"] = r["median_s"]
    cmp = guard.compare(quiet["rows"], tight_base["rows"], 0.3)
    assert {m.op for m in cmp.regressions} == {"guide"}
    assert all(cmp.allowed(m) == pytest.approx(0.3) for m in cmp.movements)
    noisy = json.loads(json.dumps(quiet))
    for r in noisy["rows"]:  # rounds spread over 1.5x their median, as under a changing load
        r["q1_s"], r["q3_s"] = 0.5 * r["median_s"], 2 * r["median_s"]
    assert guard.compare(noisy["rows"], tight_base["rows"], 0.3).regressions == []


def test_the_bench_prints_no_cuda_runtime_warning_on_a_cpu_machine(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sgg_kernels.bench", "--tiny", "--device", "cpu", "--op", "guide",
                             "--dtype", "fp32"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert result.returncode == 0, result.stderr
    assert "No CUDA runtime is found" not in result.stdout + result.stderr
