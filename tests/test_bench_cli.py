"""`python -m sgg_kernels.bench` runs on its own: without the repository's benchmarks/ folder and without
pytest-benchmark, it measures, prints the report's table, writes --json and runs the guard."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgg_kernels.bench import results

ROOT = Path(__file__).resolve().parents[1]
# The CLI as a user runs it, with `benchmarks` and `pytest_benchmark` made unimportable.
RUN_CLI = ("import runpy, sys; sys.modules['benchmarks'] = sys.modules['pytest_benchmark'] = None; "
           "sys.argv[0] = 'sgg_kernels.bench'; runpy.run_module('sgg_kernels.bench', run_name='__main__')")


@pytest.mark.slow  # one tiny case per provider, and one torch.compile: ~25 s on a busy 2-core machine
def test_tiny_run_from_outside_the_repository(tmp_path):
    out_json = tmp_path / "run.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", RUN_CLI, "--tiny", "--device", "cpu", "--op", "guided_step",
                           "--dtype", "fp32", "--json", str(out_json), "--compare"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| op | size | dtype | provider | median ms |" in proc.stdout
    data = results.load(out_json)
    assert data["machine"]["device"] == "cpu" and data["machine"]["threads"] == 1
    by_provider = {r["provider"]: r for r in data["rows"]}
    # The default providers: ours against eager, torch.compile and copy (each checked before it was timed).
    assert set(by_provider) == {"sgg cpu", "eager chain", "torch.compile chain", "copy (same bytes)"}
    for r in data["rows"]:
        assert (r["op"], r["dtype"], r["shape"], r["rounds"]) == ("guided_step", "fp32", "2x16x8x8", 1)
        assert r["median_s"] > 0 and r["bytes"] == 5 * 2 * 16 * 8 * 8 * 4
    # A tiny run shares no case with a stored full baseline: the guard says so and passes.
    assert "Nothing to compare" in proc.stdout or "No baseline for this machine kind" in proc.stdout


def test_a_recorded_run_prints_the_same_table_and_round_trips_through_json(tmp_path, capsys):
    from sgg_kernels.bench.__main__ import main
    base = results.baseline_for("cpu-intel-r-xeon-r-processor-2cores")
    assert main(["--results", str(base), "--json", str(tmp_path / "copy.json")]) == 0
    out = capsys.readouterr().out
    # The stored baseline's guided_step B=1 fp32 row, as RESULTS.md shows it (same format, same figures).
    assert "| guided_step_ | sd3-1024 B=1 [1x16x128x128] | fp32 | sgg cpu | 0.546 | 0.050 | 9.6 | 113% | 2.83x | 1.04x |" in out
    # (2.426 / 2.360 - 1) / (70 / 56 - 1) = 11% of the ideal gain
    assert "| sgg drop-in | 2.360 | 56 | 2.338 | 0.0187 | 1.03x | 1.25x | 11% |" in out
    assert json.loads((tmp_path / "copy.json").read_text()) == json.loads(base.read_text())
