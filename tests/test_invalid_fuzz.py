"""Fuzzed invalid calls never crash the process: each ends in a Python exception naming an argument."""
import os
import subprocess
import sys


def test_fuzzed_invalid_calls_raise_cleanly():
    script = os.path.join(os.path.dirname(__file__), "fuzz_invalid_calls.py")
    result = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"exit {result.returncode} (negative: killed by a signal)\n{result.stderr[-3000:]}"
    assert result.stdout.strip().endswith("fuzzed")
